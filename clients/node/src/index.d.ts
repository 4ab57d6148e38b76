// Types of @vibewell/ratelimit, the Node.js client of ratelimitd.

/** A failure mode the client can apply when no node answers. */
export type FailureMode = 'open' | 'closed';

export interface ClientOptions {
  /** Node URLs, e.g. ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]. Default: $RATELIMIT_ADDR (comma-separated), else http://127.0.0.1:8080. */
  urls?: string[];
  /** One node URL; urls wins. */
  url?: string;
  /** Bearer token: the client token (--client-token) for reset and refund, or the admin token. */
  token?: string;
  /** Time for a whole call, failover included, in ms. Default 1000. */
  timeoutMs?: number;
  /** Time one node may take to answer, in ms. Default 250. */
  attemptTimeoutMs?: number;
  /** How long a node that failed is tried only after the others, in ms. Default 2000. */
  downForMs?: number;
  /** How often nodes marked down are probed on /readyz, in ms; 0 turns it off. Default 5000. */
  healthIntervalMs?: number;
  /** How long the policy table (failure modes, windows) is kept before it is read again, in ms. Default 60000. */
  policiesTtlMs?: number;
  /** Failure mode per policy when no node answers; wins over the policy table's. */
  failureModes?: Record<string, FailureMode>;
  /** Failure mode of a policy with none set here or in the table (the server's "local" included). Default "open". */
  defaultFailureMode?: FailureMode;
  /** fetch to use. Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /**
   * Send each check, reset and refund to its key's owner first, by the
   * ring the nodes publish (GET /v1/ring): one hop instead of two. Default false.
   */
  ownerAware?: boolean;
  /** Least time between two reads of the ring, in ms (ownerAware). Default 100. */
  ringRefreshMs?: number;
}

export interface CallOptions {
  timeoutMs?: number;
  attemptTimeoutMs?: number;
  signal?: AbortSignal;
}

/** The decision of a check, or the state after a reset or refund. */
export interface RateLimitResult {
  allowed: boolean;
  policy: string;
  /** The capacity remaining counts down from. */
  limit: number;
  remaining: number;
  /** Time until the counter is full again. */
  resetAfterMs: number;
  /** Time until the same check would pass; 0 when allowed. */
  retryAfterMs: number;
  /** The node's rate-limit headers (checks only). */
  headers?: Record<string, string>;
  /** Set when no node answered and the failure mode decided. */
  fallback?: FailureMode;
  /** Why no node answered, when fallback is set. */
  error?: UnavailableError;
}

/** A check of a batch that the server refused. */
export interface ItemError {
  error: string;
  status: number;
  field?: string;
}

export interface Check {
  policy: string;
  key: string;
  /** Default 1; 0 peeks. */
  hits?: number;
}

export interface Policy {
  name: string;
  algorithm: 'sliding_window' | 'gcra' | 'token_bucket' | 'fixed_window';
  limit: number;
  window_ms: number;
  burst: number;
  failure_mode: 'local' | 'open' | 'closed';
  shadow: boolean;
  overrides?: Record<string, number>;
}

export class RateLimitClient {
  constructor(options?: ClientOptions);
  readonly urls: string[];
  /** The version of the ring checks are routed by (ownerAware), or null before it is read. */
  readonly ringVersion: string | null;
  /** Reads the ring now; resolves to its version, or null when no node served it. */
  refreshRing(options?: CallOptions): Promise<string | null>;
  close(): void;
  check(policy: string, key: string, hits?: number, options?: CallOptions): Promise<RateLimitResult>;
  peek(policy: string, key: string, options?: CallOptions): Promise<RateLimitResult>;
  checkBatch(checks: Check[], options?: CallOptions): Promise<Array<RateLimitResult | ItemError>>;
  reset(policy: string, key: string, options?: CallOptions): Promise<RateLimitResult>;
  refund(policy: string, key: string, hits?: number, options?: CallOptions): Promise<RateLimitResult>;
  resetBatch(resets: Array<{ policy: string; key: string }>, options?: CallOptions): Promise<Array<RateLimitResult | ItemError>>;
  refundBatch(refunds: Check[], options?: CallOptions): Promise<Array<RateLimitResult | ItemError>>;
  policies(options?: CallOptions): Promise<Policy[]>;
  health(options?: CallOptions): Promise<Array<{ url: string; healthy: boolean; error?: string }>>;
}

export class RateLimitError extends Error {}
export class UnavailableError extends RateLimitError {
  readonly errors: Error[];
}
export class TimeoutError extends RateLimitError {
  readonly url: string;
  readonly timeoutMs: number;
}
export class StatusError extends RateLimitError {
  readonly status: number;
  readonly field?: string;
}
export class BadRequestError extends StatusError {}
export class ForbiddenError extends StatusError {}

export const HEADER_NAMES: readonly string[];
export function rateLimitHeaders(result: RateLimitResult): Record<string, string>;

export interface MiddlewareOptions<Req> {
  client: RateLimitClient;
  policy: string;
  /** The key of a request; null or undefined skips the check. */
  key: (req: Req) => string | null | undefined | Promise<string | null | undefined>;
  /** Hits a request takes. Default 1. */
  hits?: number | ((req: Req) => number | Promise<number>);
}

/** Express/Connect middleware: (req, res, next). */
export function expressRateLimit(
  options: MiddlewareOptions<any>,
): (req: any, res: any, next: (err?: unknown) => void) => Promise<void>;

export interface EdgeOutcome {
  result: RateLimitResult | null;
  headers: Headers;
  /** The 429 to return, or null when allowed. */
  response: Response | null;
}

/** For Next.js middleware.ts and other fetch-style handlers. */
export function edgeRateLimit(options: MiddlewareOptions<Request>): (request: Request) => Promise<EdgeOutcome>;
export function applyHeaders<R extends Response>(response: R, headers: Headers): R;

/** rate-limiter-flexible's result shape. */
export class RateLimiterRes {
  constructor(remainingPoints?: number, msBeforeNext?: number, consumedPoints?: number, isFirstInDuration?: boolean);
  remainingPoints: number;
  msBeforeNext: number;
  consumedPoints: number;
  isFirstInDuration: boolean;
  toJSON(): { remainingPoints: number; msBeforeNext: number; consumedPoints: number; isFirstInDuration: boolean };
}

export interface RateLimiterRatelimitdOptions extends ClientOptions {
  client?: RateLimitClient;
  /** The ratelimitd policy whose limit applies. */
  policy: string;
  keyPrefix?: string;
  points?: number;
  duration?: number;
}

/** The interface of rate-limiter-flexible's RateLimiterRedis, on ratelimitd. */
export class RateLimiterRatelimitd {
  constructor(options: RateLimiterRatelimitdOptions);
  readonly policy: string;
  keyPrefix: string;
  points: number;
  duration: number;
  getKey(key: string | number): string;
  consume(key: string | number, points?: number): Promise<RateLimiterRes>;
  get(key: string | number): Promise<RateLimiterRes | null>;
  delete(key: string | number): Promise<boolean>;
  reward(key: string | number, points?: number): Promise<RateLimiterRes>;
  penalty(key: string | number, points?: number): Promise<RateLimiterRes>;
  block(key: string | number, secDuration: number): Promise<RateLimiterRes>;
}

export interface RatelimitdStoreOptions extends ClientOptions {
  client?: RateLimitClient;
  policy: string;
  prefix?: string;
}

/** An express-rate-limit Store on ratelimitd. */
export class RatelimitdStore {
  constructor(options: RatelimitdStoreOptions);
  readonly policy: string;
  prefix: string;
  localKeys: false;
  init(options: { limit?: unknown; windowMs?: number }): void;
  get(key: string): Promise<{ totalHits: number; resetTime: Date } | undefined>;
  increment(key: string): Promise<{ totalHits: number; resetTime: Date }>;
  decrement(key: string): Promise<void>;
  resetKey(key: string): Promise<void>;
}
