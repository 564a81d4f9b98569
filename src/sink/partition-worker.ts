import { performance } from "node:perf_hooks";
import type { ConsumerMessages, JetStreamClient, JsMsg } from "nats";
import { headers as natsHeaders } from "nats";
import { tally } from "../gen/proto.js";
import type { BusNames } from "../bus/index.js";
import {
  clickHouseErrorCode,
  isPermanentInsertError,
  queryRows,
  sql,
  type ClickHouseClient,
} from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import type { Semaphore } from "../lib/semaphore.js";
import type { Logger } from "../observability/index.js";
import { dedup, fingerprint, uniqueIds, type DedupResult } from "./dedup.js";
import type { InsertCoalescer, InsertTicket } from "./insert-coalescer.js";
import { lookupLedger, type LedgerFilter } from "./ledger-filter.js";
import { sinkMetrics as m } from "./metrics.js";

/**
 * What happens to one bus message after a write attempt. `abandon`: the partition's lease is
 * ending, so nothing more may be written; the message is left unacked for the next owner.
 */
export type Outcome = "ack" | "retry" | "dead-letter" | "abandon";

/** What the worker asks before every ClickHouse statement (see sink/leases.ts). */
export interface WriteFence {
  mayWrite(): boolean;
}

interface Buffered {
  msg: JsMsg;
  events: tally.v1.IBusEvent[];
}

/** Bus messages buffered per partition ahead of the flush (see run()). */
const prefetchMessages = 256;

/**
 * Moves one bus partition into ClickHouse. The partition is processed serially (one flush at
 * a time), which is what makes the ledger check race-free: no other writer handles these ids.
 *
 * Flush = ledger lookup → insert ledger rows of new ids → insert event rows → ack the messages.
 * The ack comes only after ClickHouse confirmed both inserts, so a crash at any point leads to
 * redelivery, which the ledger's fingerprints absorb (see dedup()).
 */
export class PartitionWorker {
  private buffer: Buffered[] = [];
  private rows = 0;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private messages: ConsumerMessages | null = null;
  private stopped = false;
  private abandoned = false;
  /** Batches handed to write() and not yet acked or dead-lettered. */
  private readonly writing = new Set<Buffered[]>();
  private keepalive: NodeJS.Timeout | null = null;
  private readonly db: string;

  constructor(
    readonly partition: number,
    private readonly js: JetStreamClient,
    private readonly ch: ClickHouseClient,
    private readonly names: BusNames,
    private readonly cfg: Config,
    private readonly inflight: Semaphore,
    private readonly log: Logger,
    private readonly fence: WriteFence,
    /** Shares the insert statements with the sink's other partitions (see insert-coalescer). */
    private readonly inserts: InsertCoalescer,
    /** The partition's Bloom filter in front of the ledger lookup; null when TALLY_SINK_BLOOM=off. */
    readonly filter: LedgerFilter | null = null,
  ) {
    this.db = cfg.clickhouse.database;
  }

  /** Consumes until {@link stop}; resolves when the consume loop ended. */
  async run(): Promise<void> {
    const consumer = await this.js.consumers.get(this.names.stream, this.names.consumer(this.partition));
    // Bounded prefetch: the client stops requesting more once this many messages are buffered
    // (wait, never drop). Each bus message is at most TALLY_PUBLISH_MAX_BYTES, so the buffer is
    // at most prefetchMessages × that per partition.
    // NOTE: not `max_bytes`: with nats.js 2.29 and nats-server 2.9, once the remaining byte
    // budget is smaller than the next message the server answers "409 Message Size Exceeds
    // MaxBytes", the client re-pulls at once with the same budget, and the consumer spins at tens
    // of thousands of pulls per second without delivering anything (seen in `bench ingest`).
    this.messages = await consumer.consume({ max_messages: prefetchMessages });
    // NOTE: a message held longer than ack_wait (buffered behind a slow flush) would be
    // redelivered while we still hold it: harmless for counting (the ledger fingerprint makes
    // the second write an identical row) but it doubles the work exactly when ClickHouse is
    // slowest. Every message we hold is kept alive with `working()` until acked.
    if (this.stopped) this.messages.stop();
    else
      this.keepalive = setInterval(
        () => this.touchHeld(),
        Math.max(500, Math.floor(this.cfg.sink.ackWaitMs / 3)),
      );
    for await (const msg of this.messages) {
      let events: tally.v1.IBusEvent[];
      try {
        events = tally.v1.BusBatch.decode(msg.data).events;
      } catch (err: unknown) {
        await this.deadLetter([msg], `undecodable: ${(err as Error).message}`);
        continue;
      }
      this.buffer.push({ msg, events });
      this.rows += events.length;
      if (this.rows >= this.cfg.sink.batchRows) {
        await this.flush();
      } else if (this.timer === null) {
        this.timer = setTimeout(() => void this.flush(), untilNextTick(this.cfg.sink.lingerMs));
      }
      if (this.stopped) break;
    }
    if (!this.abandoned) await this.flush();
    await this.flushing;
    if (this.keepalive !== null) clearInterval(this.keepalive);
  }

  /** Resets the redelivery timer of every message this worker holds. */
  private touchHeld(): void {
    for (const b of this.buffer) b.msg.working();
    for (const batch of this.writing) for (const b of batch) b.msg.working();
  }

  /** Stops pulling; pending events are flushed by {@link run} before it resolves. */
  stop(): void {
    this.stopped = true;
    this.messages?.stop();
  }

  /**
   * Stops at once without writing anything more (the lease is ending): buffered and in-flight
   * messages stay unacked and are redelivered to the partition's next owner after ack_wait.
   * A write already past its ledger insert is cut short like a crash there, which the next
   * owner's ledger check handles (see dedup()).
   */
  abandon(): void {
    this.abandoned = true;
    this.stop();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.buffer = [];
    this.rows = 0;
    if (this.keepalive !== null) clearInterval(this.keepalive);
    this.keepalive = null;
  }

  /** Serializes flushes of this partition. */
  flush(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.buffer;
    const rows = this.rows;
    this.buffer = [];
    this.rows = 0;
    if (batch.length === 0) return this.flushing;
    this.writing.add(batch);
    this.flushing = this.flushing.then(() => this.write(batch, rows));
    return this.flushing;
  }

  private async write(batch: Buffered[], rows: number): Promise<void> {
    try {
      await this.writeHeld(batch, rows);
    } finally {
      this.writing.delete(batch);
    }
  }

  private async writeHeld(batch: Buffered[], rows: number): Promise<void> {
    m.batchRows.observe(rows);
    const end = m.flushSeconds.startTimer();
    if (await this.inflight.acquire()) m.inflightWaits.inc();
    try {
      let attempt = 0;
      let solo = false;
      for (;;) {
        const outcome = await this.tryWrite(batch, solo);
        switch (outcome) {
          case "ack":
            for (const b of batch) b.msg.ack();
            return;
          case "retry":
            attempt++;
            m.retries.inc();
            if (this.abandoned) return;
            for (const b of batch) b.msg.working();
            await sleep(Math.min(30_000, 200 * 2 ** Math.min(attempt, 8)) * (0.5 + Math.random() / 2));
            continue;
          case "dead-letter":
            // A shared statement also carried other partitions' rows: first find out whether
            // the bad rows are ours at all, with statements of our own.
            if (!solo) {
              solo = true;
              continue;
            }
            await this.isolate(batch);
            return;
          case "abandon":
            return;
        }
      }
    } finally {
      this.inflight.release();
      end();
    }
  }

  /**
   * One attempt at writing a batch. Errors of the lookups (statements Tally wrote, over data
   * already in ClickHouse) are never the events' fault: retried, and alerted on when the server
   * rejected the statement. Only the inserts' data errors can lead to dead letters.
   * `solo`: the inserts carry only this batch's rows (see InsertCoalescer), for isolation.
   */
  private async tryWrite(batch: Buffered[], solo: boolean): Promise<Outcome> {
    if (this.abandoned || !this.fence.mayWrite()) return "abandon";
    const ticket = this.inserts.open(solo);
    try {
      return await this.tryWriteTicket(batch, ticket);
    } finally {
      ticket.close();
    }
  }

  private async tryWriteTicket(batch: Buffered[], ticket: InsertTicket): Promise<Outcome> {
    let result: DedupResult;
    try {
      result = await this.plan(batch.flatMap((b) => b.events));
    } catch (err: unknown) {
      if (err === fenced) return "abandon";
      this.statementFailed(err, "lookup");
      return "retry";
    }
    try {
      // Ledger rows first (see dedup()): after a crash at any point the redelivered winning copy
      // is recognised by its fingerprint and its event row is (re)written. Then rewrite records
      // before the rows they announce: a read that sees a second copy of an id always finds its
      // record and collapses it (see usage SQL in clickhouse/sql.ts). The coalescer sends them
      // in that order and asks the fence before each statement.
      if (result.ledger.length + result.rewritten.length + result.rows.length > 0) {
        if ((await ticket.submit(result, this.fence)) === "abandon") return "abandon";
      }
      m.inserted.inc(result.rows.length);
      m.duplicates.inc(result.duplicates);
      m.rewrites.inc(result.rewrites);
      return "ack";
    } catch (err: unknown) {
      if (isPermanentInsertError(err)) {
        this.log.warn({ err, partition: this.partition }, "permanent insert error; isolating bad messages");
        return "dead-letter";
      }
      this.statementFailed(err, "insert");
      return "retry";
    }
  }

  /**
   * Looks the batch's ids up and decides what to write. For ids whose ledgered copy has the
   * same fingerprint as one here, also whether that copy's event row is written: an identical
   * retry of a written event is then dropped, and only a copy whose row is missing (a crash
   * between the ledger and events inserts) is written again, with a rewrite record.
   */
  private async plan(events: tally.v1.IBusEvent[]): Promise<DedupResult> {
    const known = await lookupLedger(this.ch, this.db, uniqueIds(events), this.filter, () => {
      if (!this.fence.mayWrite()) throw fenced;
    });
    const sameCopy = new Map<string, { customer: string; type: string; ts: number; id: string }>();
    if (known.size > 0) {
      for (const e of events) {
        const id = e.id ?? "";
        const k = known.get(id);
        // The ledger's key, not the event's: with a fingerprint collision it still finds the winner's row.
        if (k !== undefined && !sameCopy.has(id) && k.fp === fingerprint(e)) sameCopy.set(id, { ...k, id });
      }
    }
    const written = new Set<string>();
    for (const q of sql.writtenEvents(this.db, [...sameCopy.values()])) {
      if (!this.fence.mayWrite()) throw fenced;
      for (const r of await queryRows<{ id: string }>(this.ch, q)) written.add(r.id);
    }
    const result = dedup(
      events,
      new Map([...known].map(([id, k]) => [id, k.fp])),
      this.partition,
      Date.now(),
      written,
    );
    // Into the filter BEFORE the ledger insert is sent: an insert whose outcome is unknown may
    // still land, and the filter must never answer "new" for an id that is in the ledger.
    this.filter?.add(result.ledger.map((r) => r.id));
    return result;
  }

  /**
   * A statement failed and will be retried. Network trouble and server overload pass; a
   * statement the server rejected (it answered with an error code) is a bug in Tally or a
   * server misconfiguration, never bad events: alert, and keep the events until it is fixed.
   */
  private statementFailed(err: unknown, stage: "lookup" | "insert"): void {
    const code = clickHouseErrorCode(err);
    m.statementErrors.inc({ stage, code: code ?? "none" });
    if (code !== undefined) {
      this.log.error(
        { err, partition: this.partition, stage, code },
        "ClickHouse rejected a sink statement; retrying (events are kept, not dead-lettered)",
      );
    } else {
      this.log.warn({ err, partition: this.partition, stage }, "retriable ClickHouse error; will retry");
    }
  }

  /** After a permanent error: write messages one by one; dead-letter those that still fail. */
  private async isolate(batch: Buffered[]): Promise<void> {
    for (const b of batch) {
      for (let attempt = 0; ; attempt++) {
        const outcome = await this.tryWrite([b], true);
        if (outcome === "ack") {
          b.msg.ack();
          break;
        }
        if (outcome === "dead-letter") {
          await this.deadLetter([b.msg], "permanent ClickHouse insert error");
          break;
        }
        if (outcome === "abandon") return;
        b.msg.working();
        await sleep(Math.min(30_000, 200 * 2 ** Math.min(attempt, 8)));
      }
    }
  }

  /** Copies messages to the dead-letter stream (with why and where from), then acks them. */
  private async deadLetter(msgs: JsMsg[], reason: string): Promise<void> {
    for (const msg of msgs) {
      const h = natsHeaders();
      h.set("Tally-Reason", reason.slice(0, 512));
      h.set("Tally-Original-Subject", msg.subject);
      h.set("Tally-Original-Seq", String(msg.seq));
      for (let attempt = 0; ; attempt++) {
        try {
          await this.js.publish(this.names.dlqSubject(this.partition), msg.data, {
            headers: h,
            timeout: 10_000,
          });
          break;
        } catch (err: unknown) {
          // The message must not be acked before it is safely in the DLQ.
          this.log.error({ err, partition: this.partition }, "dead-letter publish failed; retrying");
          msg.working();
          await sleep(Math.min(10_000, 200 * 2 ** attempt));
        }
      }
      m.deadLettered.inc({ reason: reason.startsWith("undecodable") ? "undecodable" : "insert_error" });
      this.log.error({ partition: this.partition, seq: msg.seq, reason }, "message dead-lettered");
      msg.ack();
    }
  }
}

/** Thrown inside a write attempt when the lease no longer allows writing. */
const fenced = new Error("partition lease ending");

/**
 * Milliseconds until a multiple of `lingerMs` on this process's monotonic clock, at least half a
 * linger away: every partition's linger ends on the same tick, so their flushes' lookups run
 * together and their rows share the insert statements (InsertCoalescer). A linger is thus
 * between ½ and 1½ `lingerMs`, `lingerMs` on average as before.
 */
function untilNextTick(lingerMs: number): number {
  const toTick = lingerMs - (performance.now() % lingerMs);
  return toTick < lingerMs / 2 ? toTick + lingerMs : toTick;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
