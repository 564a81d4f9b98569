/**
 * Retry policy of the SDK.
 *
 * @example
 * ```ts
 * new Tally({ url, apiKey, retry: { maxAttempts: 20, initialDelayMs: 200, maxDelayMs: 60_000 } });
 * ```
 */
export interface RetryOptions {
  /**
   * Attempts per batch (the first one included) before it is reported through `onError` as a
   * `TallyRetriesExhaustedError`. With the defaults a batch is retried for about 4 minutes.
   * @default 15
   */
  maxAttempts?: number;
  /**
   * Backoff before the second attempt; doubles each attempt, with jitter (a delay is drawn
   * uniformly between half and all of the exponential value).
   * @default 100
   */
  initialDelayMs?: number;
  /**
   * Largest backoff between attempts. Does not cap a server's `Retry-After`, which is honoured
   * as given up to `maxRetryAfterMs`.
   * @default 30000
   */
  maxDelayMs?: number;
  /**
   * Largest `Retry-After` honoured; a longer one is shortened to this.
   * @default 300000
   */
  maxRetryAfterMs?: number;
}

/** Resolved retry options. */
export type RetryPolicy = Required<RetryOptions>;

export const defaultRetry: RetryPolicy = {
  maxAttempts: 15,
  initialDelayMs: 100,
  maxDelayMs: 30_000,
  maxRetryAfterMs: 300_000,
};

/**
 * Delay before attempt `attempt + 1` after `attempt` failed attempts (1-based), with "equal
 * jitter": between half and all of `min(maxDelayMs, initialDelayMs * 2^(attempt-1))`, so that
 * many clients failing together do not retry in lockstep, yet never retry immediately.
 */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * Parses a `Retry-After` header: delay-seconds or an HTTP date. Returns milliseconds from `nowMs`
 * (0 for a date in the past), or undefined when absent or unparsable.
 */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  // An HTTP date names its day and month (RFC 9110 IMF-fixdate, or the obsolete forms).
  if (!/^[A-Za-z]{3}/.test(s)) return undefined;
  const date = Date.parse(s);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

/** HTTP statuses worth retrying: the request may succeed later unchanged. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}
