import type { CallLog, XeroStore } from "./store.js";

/**
 * Xero's per-organisation call limits (https://developer.xero.com/faq/limits: 60 calls per
 * minute, 5,000 per day, 5 in progress), kept by the client instead of discovered by 429s.
 */
export interface CallLimits {
  perMinute: number;
  /** The minute (tests shorten it). */
  windowMs: number;
  perDay: number;
}

const DAY_MINUTES = 1440;

/**
 * The window the limiter actually keeps: a little longer than Xero's, because Xero counts
 * arrivals and a call granted now arrives after a network delay that varies from call to call
 * (a call granted 60.0 s after another may arrive 59.9 s after it).
 */
export function guardedWindow(windowMs: number): number {
  return windowMs + Math.max(250, Math.ceil(windowMs / 50));
}

/**
 * Pure decision for one call at `now`: grant it (the log with the call added) or wait. A sliding
 * log for the minute (exact: at most `perMinute` grants in any guarded window), and per-minute
 * counts for the day, summed over the last 1,441 minute buckets (one more than a day: the
 * oldest bucket may be partly outside the day, so this overcounts, never undercounts).
 */
export function decideCall(
  log: CallLog,
  now: number,
  limits: CallLimits,
): { grant: CallLog } | { waitMs: number } {
  const win = guardedWindow(limits.windowMs);
  const recent = log.recent.filter((t) => t > now - win);
  const minute = Math.floor(now / 60_000);
  const day: Record<string, number> = {};
  let dayCount = 0;
  let oldest = Number.POSITIVE_INFINITY;
  for (const [k, n] of Object.entries(log.day)) {
    const b = Number(k);
    if (b > minute - DAY_MINUTES - 1) {
      day[k] = n;
      dayCount += n;
      oldest = Math.min(oldest, b);
    }
  }
  if (dayCount >= limits.perDay) return { waitMs: (oldest + DAY_MINUTES + 1) * 60_000 - now };
  if (recent.length >= limits.perMinute)
    return { waitMs: recent[recent.length - limits.perMinute]! + win - now };
  day[String(minute)] = (day[String(minute)] ?? 0) + 1;
  return { grant: { recent: [...recent, now].slice(-limits.perMinute), day } };
}

/** Thrown when the next call could start only after `waitMs`, longer than the caller accepts. */
export class CallBudgetExhausted extends Error {
  override name = "CallBudgetExhausted";
  constructor(readonly waitMs: number) {
    super(`Xero call budget exhausted for ${Math.ceil(waitMs / 1000)} s (60/min, 5000/day per organisation)`);
  }
}

/**
 * Grants call starts within {@link CallLimits}. The call log lives in the push bucket (key
 * `limiter`, compare-and-set), not in memory, so the budget holds across a restart and across
 * processes pushing to the same organisation (the close role and `tally push xero`): a process
 * killed and restarted within the minute does not get a fresh 60. Each grant is one KV read and
 * one write, cheap at 60 calls a minute. A grant is recorded before the call starts, so a call
 * that was granted and then never made still counts (the safe side).
 */
export class CallLimiter {
  private queue: Promise<void> = Promise.resolve();
  private local: CallLog = { recent: [], day: {} };

  constructor(
    private readonly store: XeroStore | null,
    readonly limits: CallLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Resolves when one more call may start (the caller starts it at once); rejects with
   * {@link CallBudgetExhausted} when that is more than `maxWaitMs` away. Waiters are served in
   * arrival order.
   */
  acquire(maxWaitMs = Number.POSITIVE_INFINITY): Promise<void> {
    const granted = this.queue.then(() => this.grant(maxWaitMs));
    this.queue = granted.catch(() => undefined);
    return granted;
  }

  private async grant(maxWaitMs: number): Promise<void> {
    for (;;) {
      let wait = 0;
      const apply = (cur: CallLog | null): CallLog | null => {
        const d = decideCall(cur ?? { recent: [], day: {} }, this.now(), this.limits);
        if ("grant" in d) {
          wait = 0;
          return d.grant;
        }
        wait = d.waitMs;
        return null;
      };
      if (this.store === null) {
        const next = apply(this.local);
        if (next !== null) this.local = next;
      } else {
        await this.store.updateCallLog(apply);
      }
      if (wait <= 0) return;
      if (wait > maxWaitMs) throw new CallBudgetExhausted(wait);
      // +1 ms: timers may fire a fraction early.
      await new Promise((r) => setTimeout(r, Math.ceil(wait) + 1));
    }
  }
}
