import type { Logger } from "../observability/index.js";
import { queryUsage, type UsageDeps, type UsageRequest, type UsageResult } from "./query.js";

/** What a live-usage subscriber receives: a fresh answer, or a failure to get one. */
export type StreamUpdate =
  /** `json` is the whole answer and `dataJson` its rows, serialized once for every subscriber. */
  | { kind: "result"; result: UsageResult; json: string; dataJson: string }
  | { kind: "error"; error: Error }
  /** The process is shutting down: end the stream (clients reconnect elsewhere). */
  | { kind: "closed" };

/** A live stream was refused: its owner (API key, portal token) or this process holds too many. */
export class UsageStreamLimitError extends Error {
  override name = "UsageStreamLimitError";
  constructor(
    readonly scope: "owner" | "process",
    readonly limit: number,
  ) {
    super(
      scope === "owner"
        ? `at most ${limit} live usage streams may be open at once for one API key or portal token`
        : `this edge holds its maximum of ${limit} live usage streams`,
    );
  }
}

interface Poller {
  listeners: Set<(u: StreamUpdate) => void>;
  timer: NodeJS.Timeout | null;
  last: StreamUpdate | null;
  stopped: boolean;
}

/**
 * Live usage for Server-Sent Events: one poller per distinct question, shared by every
 * subscriber asking it (a hundred browsers on one customer's page cost one query per tick).
 * Each tick runs the same {@link queryUsage} as the usage API, so the stream and the API
 * never disagree; subscribers decide what to send (changed data, or a newer watermark).
 */
export class UsageStreams {
  private readonly pollers = new Map<string, Poller>();
  private subscribers = 0;
  /** Open streams per owner (`key:<id>`, `portal:<token id>`). */
  private readonly owners = new Map<string, number>();

  constructor(
    private readonly deps: UsageDeps,
    private readonly log: Logger,
    /** Time between two queries of one question. @default 500 */
    private readonly intervalMs = 500,
    /** Most open subscriptions per process. @default 1000 */
    readonly maxSubscribers = 1000,
  ) {}

  /** Open subscriptions. */
  get size(): number {
    return this.subscribers;
  }

  /** Streams `owner` holds open. */
  heldBy(owner: string): number {
    return this.owners.get(owner) ?? 0;
  }

  /**
   * Claims one stream for `owner` before the stream starts: throws
   * {@link UsageStreamLimitError} when the owner already holds `ownerLimit` streams or the
   * process is at {@link maxSubscribers}. One stream may subscribe to several questions (the
   * usage page follows every meter on one connection) and counts once for its owner.
   * @returns release; call it once when the stream ends (further calls do nothing)
   */
  acquire(owner: string, ownerLimit: number): () => void {
    if (this.subscribers >= this.maxSubscribers)
      throw new UsageStreamLimitError("process", this.maxSubscribers);
    const held = this.heldBy(owner);
    if (held >= ownerLimit) throw new UsageStreamLimitError("owner", ownerLimit);
    this.owners.set(owner, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.heldBy(owner) - 1;
      if (n <= 0) this.owners.delete(owner);
      else this.owners.set(owner, n);
    };
  }

  /**
   * Calls `listener` with an update after every tick (the first as soon as possible).
   * @returns unsubscribe
   */
  subscribe(req: UsageRequest, listener: (u: StreamUpdate) => void): () => void {
    const key = JSON.stringify([
      req.meter.key,
      req.meter.version,
      req.customer ?? null,
      req.fromMs,
      req.toMs,
      req.window ?? null,
      req.tz ?? "UTC",
      req.groupBy ?? [],
    ]);
    let p = this.pollers.get(key);
    if (p === undefined) {
      p = { listeners: new Set(), timer: null, last: null, stopped: false };
      this.pollers.set(key, p);
      this.tick(p, req);
    } else if (p.last !== null) {
      listener(p.last);
    }
    p.listeners.add(listener);
    this.subscribers++;
    const poller = p;
    return () => {
      if (!poller.listeners.delete(listener)) return;
      this.subscribers--;
      if (poller.listeners.size === 0) {
        poller.stopped = true;
        if (poller.timer !== null) clearTimeout(poller.timer);
        this.pollers.delete(key);
      }
    };
  }

  /** Stops every poller and tells every subscriber to end its stream (process shutdown). */
  close(): void {
    for (const p of this.pollers.values()) {
      p.stopped = true;
      if (p.timer !== null) clearTimeout(p.timer);
      for (const l of p.listeners) l({ kind: "closed" });
    }
    this.pollers.clear();
  }

  private tick(p: Poller, req: UsageRequest): void {
    queryUsage(this.deps, req)
      .then(
        (result): StreamUpdate => ({
          kind: "result",
          result,
          json: JSON.stringify(result),
          dataJson: JSON.stringify(result.data),
        }),
        (error: unknown): StreamUpdate => {
          this.log.warn({ err: error, meter: req.meter.key }, "live usage query failed; retrying");
          return { kind: "error", error: error instanceof Error ? error : new Error(String(error)) };
        },
      )
      .then((u) => {
        if (p.stopped) return;
        p.last = u;
        for (const l of p.listeners) l(u);
        p.timer = setTimeout(
          () => this.tick(p, req),
          u.kind === "error" ? this.intervalMs * 4 : this.intervalMs,
        );
      })
      .catch((err: unknown) => this.log.error({ err }, "live usage listener failed"));
  }
}
