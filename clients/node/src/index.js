// @vibewell/ratelimit: the Node.js client of ratelimitd.

export { RateLimitClient } from './client.js';
export {
  RateLimitError,
  UnavailableError,
  TimeoutError,
  StatusError,
  BadRequestError,
  ForbiddenError,
} from './errors.js';
export { rateLimitHeaders, HEADER_NAMES } from './headers.js';
export { expressRateLimit, edgeRateLimit, applyHeaders } from './middleware.js';
export { RateLimiterRatelimitd, RateLimiterRes } from './flexible.js';
export { RatelimitdStore } from './store.js';
