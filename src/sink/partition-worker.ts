import type { ConsumerMessages, JetStreamClient, JsMsg } from "nats";
import { headers as natsHeaders } from "nats";
import { tally } from "../gen/proto.js";
import type { BusNames } from "../bus/index.js";
import { isPermanentInsertError, queryRows, sql, type ClickHouseClient } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import type { Semaphore } from "../lib/semaphore.js";
import type { Logger } from "../observability/index.js";
import { dedup, uniqueIds } from "./dedup.js";
import { sinkMetrics as m } from "./metrics.js";

/** What happens to one bus message after a write attempt. */
export type Outcome = "ack" | "retry" | "dead-letter";

interface Buffered {
  msg: JsMsg;
  events: tally.v1.IBusEvent[];
}

/** Bus messages buffered per partition ahead of the flush (see run()). */
const prefetchMessages = 256;

/** Ids per ledger lookup query; keeps queries well under ClickHouse's max_query_size. */
const lookupChunk = 2000;

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
  /** Batches handed to write() and not yet acked or dead-lettered. */
  private readonly writing = new Set<Buffered[]>();
  private keepalive: NodeJS.Timeout | null = null;
  private readonly db: string;
  private readonly table: string;
  private readonly ledgerTable: string;
  private readonly rewritesTable: string;

  constructor(
    readonly partition: number,
    private readonly js: JetStreamClient,
    private readonly ch: ClickHouseClient,
    private readonly names: BusNames,
    private readonly cfg: Config,
    private readonly inflight: Semaphore,
    private readonly log: Logger,
  ) {
    this.db = cfg.clickhouse.database;
    this.table = sql.eventsTable(this.db);
    this.ledgerTable = sql.ledgerTable(this.db);
    this.rewritesTable = sql.rewritesTable(this.db);
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
        this.timer = setTimeout(() => void this.flush(), this.cfg.sink.lingerMs);
      }
      if (this.stopped) break;
    }
    await this.flush();
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
      for (;;) {
        const outcome = await this.tryWrite(batch);
        switch (outcome) {
          case "ack":
            for (const b of batch) b.msg.ack();
            return;
          case "retry":
            attempt++;
            m.retries.inc();
            for (const b of batch) b.msg.working();
            await sleep(Math.min(30_000, 200 * 2 ** Math.min(attempt, 8)) * (0.5 + Math.random() / 2));
            continue;
          case "dead-letter":
            await this.isolate(batch);
            return;
        }
      }
    } finally {
      this.inflight.release();
      end();
    }
  }

  /** One attempt at writing a batch; classifies failures by ClickHouse error code. */
  private async tryWrite(batch: Buffered[]): Promise<Outcome> {
    try {
      const events = batch.flatMap((b) => b.events);
      const ids = uniqueIds(events);
      const known = new Map<string, string>();
      for (let i = 0; i < ids.length; i += lookupChunk) {
        const found = await queryRows<{ id: string; fp: string }>(
          this.ch,
          sql.ledgerLookup(this.db, ids.slice(i, i + lookupChunk)),
        );
        for (const r of found) known.set(r.id, r.fp);
      }
      const result = dedup(events, known, this.partition, Date.now());
      // Ledger first (see dedup()): after a crash at any point the redelivered winning copy
      // is recognised by its fingerprint and its event row is (re)written.
      if (result.ledger.length > 0) {
        await this.ch.insert({ table: this.ledgerTable, values: result.ledger, format: "JSONEachRow" });
        injectCrash(this.cfg.sink.crashAfterInsert);
      }
      // Rewrite records before the rows they announce: a read that sees a second copy of an id
      // always finds its record and collapses it (see usage SQL in clickhouse/sql.ts).
      if (result.rewritten.length > 0) {
        await this.ch.insert({ table: this.rewritesTable, values: result.rewritten, format: "JSONEachRow" });
      }
      if (result.rows.length > 0) {
        await this.ch.insert({ table: this.table, values: result.rows, format: "JSONEachRow" });
        injectCrash(this.cfg.sink.crashAfterInsert);
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
      this.log.warn({ err, partition: this.partition }, "retriable ClickHouse error; will retry");
      return "retry";
    }
  }

  /** After a permanent error: write messages one by one; dead-letter those that still fail. */
  private async isolate(batch: Buffered[]): Promise<void> {
    for (const b of batch) {
      for (let attempt = 0; ; attempt++) {
        const outcome = await this.tryWrite([b]);
        if (outcome === "ack") {
          b.msg.ack();
          break;
        }
        if (outcome === "dead-letter") {
          await this.deadLetter([b.msg], "permanent ClickHouse insert error");
          break;
        }
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

let insertsSoFar = 0;
/**
 * Fault injection (tests only): die like a killed process after the Nth ClickHouse insert,
 * before the ack. Odd N falls between the ledger insert and its events insert; even N after both.
 */
function injectCrash(after: number): void {
  if (after > 0 && ++insertsSoFar === after) process.kill(process.pid, "SIGKILL");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
