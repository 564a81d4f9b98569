/**
 * What to do after one delivery attempt (pure; the dispatcher does the I/O). Standard Webhooks:
 * 2xx is success; anything else, 3xx included (redirects are not followed), is a failure retried
 * on the schedule; 410 Gone disables the endpoint; `Retry-After` on a failure pushes the next
 * attempt later (never earlier than the schedule).
 */
export type AttemptDecision =
  { kind: "success" } | { kind: "retry"; delayMs: number } | { kind: "exhausted" } | { kind: "gone" };

export interface AttemptResult {
  /** Null: no response (timeout, connection refused or reset). */
  status: number | null;
  /** Parsed `Retry-After` in ms, if the response had one. */
  retryAfterMs?: number | undefined;
}

/** Largest `Retry-After` honoured (a day): a receiver cannot park a delivery for ever. */
export const maxRetryAfterMs = 86_400_000;

/**
 * @param scheduledAttempts scheduled attempts made so far, this one included (1 after the first)
 * @param scheduleMs waits before retries 1..n (TALLY_WEBHOOK_RETRY_SCHEDULE)
 * @param random in [0, 1): ±10 % jitter, so retries of many deliveries do not arrive together
 */
export function decideAttempt(
  result: AttemptResult,
  scheduledAttempts: number,
  scheduleMs: readonly number[],
  random: number,
): AttemptDecision {
  if (result.status !== null && result.status >= 200 && result.status < 300) return { kind: "success" };
  if (result.status === 410) return { kind: "gone" };
  const wait = scheduleMs[scheduledAttempts - 1];
  if (wait === undefined) return { kind: "exhausted" };
  const jittered = Math.round(wait * (0.9 + 0.2 * random));
  const retryAfter = Math.min(result.retryAfterMs ?? 0, maxRetryAfterMs);
  return { kind: "retry", delayMs: Math.max(jittered, retryAfter) };
}

/** `Retry-After`: seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === "") return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}
