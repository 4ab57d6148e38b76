// Errors of the client. Every one is a RateLimitError; test with instanceof.

/** Base class of every error the client throws. */
export class RateLimitError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * No node answered within the call's time (every node down, refused or
 * timed out), and the call has no failure mode to decide it: a batch, a
 * reset or a refund, or a check whose policy's failure mode is neither
 * open nor closed. `errors` holds the failure of each node tried.
 */
export class UnavailableError extends RateLimitError {
  constructor(message, errors = []) {
    super(message);
    this.errors = errors;
  }
}

/** One node did not answer within the attempt's timeout. */
export class TimeoutError extends RateLimitError {
  constructor(url, ms) {
    super(`${url}: no answer within ${ms} ms`);
    this.url = url;
    this.timeoutMs = ms;
  }
}

/**
 * The server answered with a status that is not a decision. `status` is
 * the HTTP status, `field` the request field at fault, if any.
 */
export class StatusError extends RateLimitError {
  constructor(status, message, field) {
    super(field ? `status ${status}: ${message} (field ${field})` : `status ${status}: ${message}`);
    this.status = status;
    this.field = field || undefined;
  }
}

/** The request was refused as invalid (400): an unknown policy, a bad key or hits. */
export class BadRequestError extends StatusError {}

/** The server refused the call (403): a reset or refund without the client or admin token. */
export class ForbiddenError extends StatusError {}
