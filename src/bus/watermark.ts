import type { JetStreamManager, StoredMsg } from "nats";

/** The slice of nats.js's direct-get API used here (present at runtime, not exported as a type). */
interface DirectGet {
  getMessage(stream: string, query: { seq: number; next_by_subj: string }): Promise<StoredMsg>;
}
import type { BusNames } from "./names.js";

/**
 * The freshness watermark of every read (DESIGN invariant 3): a time T such that every event
 * that got a 2xx from ingest before T is in ClickHouse.
 *
 * Derivation: the sink acks a bus message only after ClickHouse confirmed its insert, and the
 * stream is a work queue, so the oldest message still stored for a partition is the oldest
 * not yet written. Events acknowledged before that message was stored are written. With no
 * message pending, everything accepted before the moment we asked is written.
 * Read the watermark *before* querying ClickHouse so the query sees at least that much.
 */
export class Watermarks {
  private cached: { at: number; value: number } | null = null;
  private inflight: Promise<number> | null = null;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly names: BusNames,
    private readonly partitions: number,
    private readonly cacheMs = 200,
  ) {}

  /** Epoch ms of the watermark, cached for `cacheMs` (a cached value is only ever older, so still true). */
  async current(): Promise<number> {
    const now = Date.now();
    if (this.cached !== null && now - this.cached.at < this.cacheMs) return this.cached.value;
    this.inflight ??= this.compute().finally(() => (this.inflight = null));
    return this.inflight;
  }

  private async compute(): Promise<number> {
    const asked = Date.now();
    const info = await this.jsm.streams.info(this.names.stream);
    let wm = asked;
    if (info.state.messages > 0) {
      const oldest = await Promise.all(
        Array.from({ length: this.partitions }, (_, p) => this.oldestStored(p)),
      );
      for (const t of oldest) if (t !== null) wm = Math.min(wm, t - 1);
    }
    this.cached = { at: asked, value: wm };
    return wm;
  }

  private async oldestStored(p: number): Promise<number | null> {
    try {
      // NOTE: `direct` exists on the manager at runtime (nats 2.29) but is missing from its typings.
      const direct = (this.jsm as JetStreamManager & { direct: DirectGet }).direct;
      const m = await direct.getMessage(this.names.stream, { seq: 0, next_by_subj: this.names.subject(p) });
      return m.time.getTime();
    } catch (err: unknown) {
      if ((err as { code?: string }).code === "404") return null;
      throw err;
    }
  }
}
