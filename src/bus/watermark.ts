import type { JetStreamManager, StoredMsg } from "nats";
import type { Logger } from "../observability/index.js";
import {
  ackFloor,
  DeadLetterLog,
  stateOf,
  storedDeadLetterSeqs,
  summarize,
  type DeadLetter,
  type Resolution,
} from "./dead-letters.js";
import type { BusNames } from "./names.js";

/** The slice of nats.js's direct-get API used here (present at runtime, not exported as a type). */
interface DirectGet {
  getMessage(stream: string, query: { seq: number; next_by_subj: string }): Promise<StoredMsg>;
}

/** What a read reports about its own completeness. */
export interface WatermarkStatus {
  /** Epoch ms: every event that got a 2xx from ingest before it is in ClickHouse. */
  watermarkMs: number;
  /**
   * Events in dead-lettered messages that are neither discarded nor replayed-and-written
   * (undecodable messages count 0 events here, but hold the watermark all the same).
   */
  deadLetterPendingEvents: number;
  /** Dead-lettered messages holding the watermark. */
  deadLetterPendingMessages: number;
}

/**
 * The freshness watermark of every read (DESIGN invariant 3): a time T such that every event
 * that got a 2xx from ingest before T is in ClickHouse.
 *
 * Derivation, per partition: the sink acks a bus message only after ClickHouse confirmed its
 * insert, and its consumer's ack floor is the sequence up to which every message is acked. So
 * the first message *stored above the ack floor* is the oldest possibly unwritten one; events
 * acknowledged before it was stored are written. The floor matters: after nats-server is
 * killed, acked messages of a work-queue stream can come back from disk below the floor,
 * where they are never redelivered nor removed; "the oldest stored message" would then freeze
 * the watermark forever. Such leftovers are deleted here once proven written (see
 * `settleBelowFloor`: a message below the floor is not always acked after a crash).
 *
 * Dead letters: the sink acks a message after copying it to the DLQ stream, so the events
 * stream no longer shows it. Every DLQ message neither discarded nor replayed-and-written holds
 * the watermark at its oldest event's receive time (at 0 when undecodable: its receive times
 * are unknown, so nothing can be claimed until an operator replays or discards it).
 *
 * Read the watermark *before* querying ClickHouse so the query sees at least that much.
 */
export class Watermarks {
  private cached: { at: number; value: WatermarkStatus } | null = null;
  private inflight: Promise<WatermarkStatus> | null = null;
  /** DLQ messages never change: decoded once, kept while stored. */
  private readonly letters = new Map<number, DeadLetter>();
  private resolutionLog: DeadLetterLog | null = null;
  private resolutions: { revision: number; bySeq: Map<number, Resolution> } | null = null;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly names: BusNames,
    private readonly partitions: number,
    private readonly cacheMs = 200,
    private readonly log?: Logger,
    /**
     * Proves a bus message's events countable (ledger + written row; see `messageSettled` in
     * src/sink). Without it, a message below the ack floor is never deleted and holds the watermark.
     */
    private readonly settled?: (data: Uint8Array) => Promise<boolean>,
  ) {}

  /** Epoch ms of the watermark, cached for `cacheMs` (a cached value is only ever older, so still true). */
  async current(): Promise<number> {
    return (await this.status()).watermarkMs;
  }

  /** The watermark and the dead letters holding it, cached like {@link current}. */
  async status(): Promise<WatermarkStatus> {
    const now = Date.now();
    if (this.cached !== null && now - this.cached.at < this.cacheMs) return this.cached.value;
    this.inflight ??= this.compute().finally(() => (this.inflight = null));
    return this.inflight;
  }

  private async compute(): Promise<WatermarkStatus> {
    const asked = Date.now();
    const value: WatermarkStatus = {
      watermarkMs: asked,
      deadLetterPendingEvents: 0,
      deadLetterPendingMessages: 0,
    };
    // NOTE: order matters. The sink stores a dead letter before it acks the original, so
    // reading the events stream first and the DLQ second cannot miss a message that moved
    // between the two. Ack floors are read before the stored messages: floors only rise, so a
    // message found above an older floor is at worst already written (conservative).
    const info = await this.jsm.streams.info(this.names.stream);
    const parts = Array.from({ length: this.partitions }, (_, p) => p);
    let floors: number[] | null = null;
    if (info.state.messages > 0) {
      floors = await Promise.all(parts.map((p) => ackFloor(this.jsm, this.names, p)));
      const oldest = await Promise.all(
        parts.map((p) => this.oldestUnwritten(p, floors![p]!, info.state.first_seq)),
      );
      for (const t of oldest) if (t !== null) value.watermarkMs = Math.min(value.watermarkMs, t - 1);
    }
    const seqs = await storedDeadLetterSeqs(this.jsm, this.names);
    if (seqs.length > 0) {
      floors ??= await Promise.all(parts.map((p) => ackFloor(this.jsm, this.names, p)));
      const letters = await this.deadLetters(seqs);
      const resolutions = await this.resolutionsBySeq();
      for (const d of letters) {
        const state = stateOf(d, resolutions.get(d.seq), floors);
        if (state !== "pending" && state !== "replaying") continue;
        value.deadLetterPendingMessages++;
        value.deadLetterPendingEvents += d.events ?? 0;
        const bound = d.oldestReceivedMs === null ? 0 : Math.max(0, d.oldestReceivedMs - 1);
        value.watermarkMs = Math.min(value.watermarkMs, bound);
      }
    }
    this.cached = { at: asked, value };
    return value;
  }

  /**
   * Stored time of the oldest message of partition `p` that may be unwritten, or null if none:
   * the first above the ack floor, unless a message at or below the floor is not settled.
   */
  private async oldestUnwritten(p: number, floor: number, firstSeq: number): Promise<number | null> {
    if (firstSeq <= floor) {
      const held = await this.settleBelowFloor(p, floor);
      if (held !== null) return held;
    }
    const m = await this.direct(p, floor + 1);
    return m === null ? null : m.time.getTime();
  }

  /**
   * Messages of partition `p` stored at or below its ack floor. A work-queue stream removes a
   * message when it is acked, so normally there are none. After an unclean nats-server stop
   * there can be two kinds, which look alike: acked messages left on disk (written; they would
   * freeze the watermark and take stream space forever), and messages that were NOT written
   * (seen: deleting every message below the floor lost a third of the acknowledged events in a
   * test that combined a nats-server kill with the sink re-leasing its partitions; a likely
   * cause is a stream that lost its unflushed tail and reused sequence numbers below the
   * consumer's restored floor). So each is deleted only when `settled` proves every event in it
   * countable; the first one that is not bounds the watermark. Returns that bound, or null.
   */
  private async settleBelowFloor(p: number, floor: number): Promise<number | null> {
    for (let seq = 0, n = 0; n < 1000; n++) {
      const m = await this.direct(p, seq);
      if (m === null || m.seq > floor) return null;
      if (this.settled === undefined || !(await this.settled(m.data).catch(() => false))) {
        return m.time.getTime();
      }
      try {
        await this.jsm.streams.deleteMessage(this.names.stream, m.seq, false);
        this.log?.warn(
          { partition: p, seq: m.seq, ackFloor: floor },
          "deleted a written bus message left below the ack floor by an unclean nats-server stop",
        );
      } catch (err: unknown) {
        this.log?.warn({ err, partition: p, seq: m.seq }, "could not delete a written leftover bus message");
      }
      seq = m.seq + 1;
    }
    // More leftovers than one pass checks: hold the watermark at the next one for now.
    const next = await this.direct(p, 0);
    return next !== null && next.seq <= floor ? next.time.getTime() : null;
  }

  /** The first message of partition `p` with sequence ≥ `seq`, or null. */
  private async direct(p: number, seq: number): Promise<StoredMsg | null> {
    try {
      // NOTE: `direct` exists on the manager at runtime (nats 2.29) but is missing from its typings.
      const direct = (this.jsm as JetStreamManager & { direct: DirectGet }).direct;
      return await direct.getMessage(this.names.stream, { seq, next_by_subj: this.names.subject(p) });
    } catch (err: unknown) {
      if ((err as { code?: string }).code === "404") return null;
      throw err;
    }
  }

  /** Summaries of the stored DLQ messages, decoding only ones not seen before. */
  private async deadLetters(seqs: number[]): Promise<DeadLetter[]> {
    const stored = new Set(seqs);
    for (const s of this.letters.keys()) if (!stored.has(s)) this.letters.delete(s);
    const out: DeadLetter[] = [];
    for (const seq of seqs) {
      let d = this.letters.get(seq);
      if (d === undefined) {
        const m = await this.jsm.streams.getMessage(this.names.dlqStream, { seq }).catch((err: unknown) => {
          // Deleted since the stream info was read (resolved meanwhile).
          if ((err as { code?: string }).code === "404") return null;
          throw err;
        });
        if (m === null) continue;
        d = summarize(m);
        this.letters.set(seq, d);
      }
      out.push(d);
    }
    return out;
  }

  /** Resolution records, re-read only when the bucket changed. */
  private async resolutionsBySeq(): Promise<Map<number, Resolution>> {
    this.resolutionLog ??= await DeadLetterLog.bind(this.jsm.jetstream(), this.names);
    if (this.resolutionLog === null) return new Map();
    const revision = await this.resolutionLog.revision();
    if (this.resolutions?.revision !== revision) {
      this.resolutions = { revision, bySeq: await this.resolutionLog.all() };
    }
    return this.resolutions.bySeq;
  }
}
