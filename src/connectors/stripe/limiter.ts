/**
 * At most `perSecond` request starts in any one-second window (a sliding-window log).
 *
 * Why not a token bucket: a bucket of capacity C refilled at R/s lets C + R requests through in
 * one second (a full bucket, then the refill), and Stripe counts requests per rolling second. The
 * log keeps the start times of the last `perSecond` grants; the next grant waits until the oldest
 * of them is a full second old, so no one-second window ever holds more than `perSecond`.
 * Waiters are served in arrival order (no starvation of a large invoice by small ones).
 *
 * Grants are also spaced at least `windowMs / perSecond` apart: a burst of `perSecond` requests
 * at once arrives spread over the network's (or the server's) delays, and the next second's
 * burst then overlaps it in Stripe's window. Spaced grants leave room for that jitter
 * (bench/RESULTS-push.md: a burst-allowing window drew 4 % 429s at 25/s, spacing none).
 */
export class RateLimiter {
  /** Start times (ms) of the last `perSecond` grants, oldest first (a ring). */
  private readonly starts: number[] = [];
  private queue: Promise<void> = Promise.resolve();
  private last = Number.NEGATIVE_INFINITY;

  /**
   * @param windowMs a little over a second by default: requests granted exactly a second apart
   * can arrive closer together after unequal network delays, and Stripe counts arrivals.
   */
  constructor(
    readonly perSecond: number,
    private readonly windowMs = 1025,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!Number.isInteger(perSecond) || perSecond < 1)
      throw new Error("perSecond must be a positive integer");
  }

  /** Resolves when one more request may start; the caller starts it at once. */
  acquire(): Promise<void> {
    const granted = this.queue.then(() => this.grant());
    this.queue = granted;
    return granted;
  }

  private async grant(): Promise<void> {
    const spacing = this.windowMs / this.perSecond;
    for (;;) {
      const t = this.now();
      const full = this.starts.length >= this.perSecond;
      const wait = Math.max(this.last + spacing - t, full ? this.starts[0]! + this.windowMs - t : 0);
      if (wait <= 0) {
        if (full) this.starts.shift();
        this.starts.push(t);
        this.last = t;
        return;
      }
      // +1 ms: timers may fire a fraction early relative to performance.now().
      await new Promise((r) => setTimeout(r, Math.ceil(wait) + 1));
    }
  }
}
