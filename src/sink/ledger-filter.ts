import type { Readable } from "node:stream";
import { ident, lit, queryRows, sql, type ClickHouseClient } from "../clickhouse/index.js";
import type { Logger } from "../observability/index.js";
import { BloomFilter, idHashes, type IdHashes } from "./bloom.js";
import { sinkMetrics as m } from "./metrics.js";

/** Most journal entries of one build (two per id: 16M ids, 128 MiB); see LedgerFilter.giveUp(). */
const maxJournaled = 2 * 16 * 1024 * 1024;

/** Options of {@link LedgerFilter}. */
export interface LedgerFilterOptions {
  ch: ClickHouseClient;
  db: string;
  partition: number;
  log: Logger;
  /**
   * Wait before the first build reads the ledger: the lease TTL. A statement the partition's
   * previous holder sent in time but ClickHouse executes late must land before the read.
   */
  settleMs: number;
  /** Filter capacity = ids in the partition's ledger × this (room to grow before a rebuild). @default 1.5 */
  growth?: number;
  /** Smallest capacity. @default 1_000_000 */
  minCapacity?: number;
  /** Bits per id of capacity. @default 10 (~0.8 % false positives at capacity) */
  bitsPerId?: number;
}

/**
 * The Bloom filter in front of one bus partition's dedup ledger, for as long as this sink holds
 * the partition's lease. "Definitely new" ids skip the ClickHouse lookup; everything else (and
 * every id until the first build finished) is looked up as without the filter.
 *
 * Invariant: once {@link ready}, the filter holds every id of the ledger that can arrive on this
 * partition, so it never answers "new" for a ledgered id. Why that holds:
 * - A ledger row is written only by the worker of the partition the id is routed to
 *   (`fnv1a32(id) % partitions`, fixed for the stream's life; dead letters are replayed to their
 *   original partition), and it records that partition in `bus_partition`. So
 *   `WHERE bus_partition = p` reads exactly the ids of partition p, without hashing them in
 *   ClickHouse (18.16 has no FNV).
 * - Rows written by earlier holders: the build reads the ledger after acquiring the lease and
 *   after `settleMs` (a late statement of the previous holder lands first; see sink/README.md).
 * - Rows this worker writes: {@link add} is called with the ids of every ledger insert *before*
 *   the insert is sent. While a build runs, they are also journaled (as hashes) and replayed into
 *   the new filter before it replaces the old one, so an insert racing the build's read is never
 *   missed. The worker is serial: the insert of an id added before the journal started had
 *   completed before the build's read began.
 * - Ids whose ledger partition was dropped (retention) stay in the filter: false positives only.
 *
 * Bounded false positives: the filter is sized for `growth ×` the ids read; when more ids than
 * its capacity were added, a rebuild from the ledger (which drops expired days) starts, while
 * the old filter (complete, only fuller) keeps answering.
 */
export class LedgerFilter {
  private current: BloomFilter | null = null;
  /** Hashes of ids added while a build runs (pairs h1, h2), replayed into the new filter. */
  private journal: Uint32Array | null = new Uint32Array(2048);
  private journaled = 0;
  private building = false;
  private stopped = false;
  /** Set when a build's journal outgrew {@link maxJournaled}: no more builds (see add()). */
  private gaveUp = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly scratch: IdHashes = { h1: 0, h2: 0 };
  private readonly growth: number;
  private readonly minCapacity: number;
  private readonly bitsPerId: number;

  constructor(private readonly opts: LedgerFilterOptions) {
    this.growth = opts.growth ?? 1.5;
    this.minCapacity = opts.minCapacity ?? 1_000_000;
    this.bitsPerId = opts.bitsPerId ?? 10;
  }

  /** Schedules the first build (after `settleMs`); the journal of added ids runs from now. */
  start(): this {
    this.building = true;
    this.timer = setTimeout(() => void this.build(), this.opts.settleMs);
    return this;
  }

  /** Stops building; the filter is dropped with the lease. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    m.filterBytes.remove({ partition: String(this.opts.partition) });
    this.current = null;
    this.journal = null;
  }

  /** Whether the filter answers (a build completed). */
  get ready(): boolean {
    return this.current !== null;
  }

  /** The filter in use, if any (for measurements). */
  get filter(): BloomFilter | null {
    return this.current;
  }

  /** False only when `id` is definitely not in the partition's ledger. */
  mayContain(id: string): boolean {
    return this.current === null || this.current.mayContain(id);
  }

  /** Records ids about to be inserted into the ledger. Call BEFORE sending the insert. */
  add(ids: Iterable<string>): void {
    if (this.stopped) return;
    const cur = this.current;
    if (cur !== null && !this.building && !this.gaveUp && cur.added > cur.capacity) this.rebuild();
    for (const id of ids) {
      cur?.add(id);
      if (this.journal !== null) {
        if (this.journaled >= maxJournaled) {
          this.giveUp();
          continue;
        }
        const h = idHashes(id, this.scratch);
        if (this.journaled + 2 > this.journal.length) {
          const bigger = new Uint32Array(this.journal.length * 2);
          bigger.set(this.journal);
          this.journal = bigger;
        }
        this.journal[this.journaled++] = h.h1;
        this.journal[this.journaled++] = h.h2;
      }
    }
  }

  /**
   * A build that keeps failing while ids are written would journal without bound. Past
   * {@link maxJournaled} ids the build is abandoned: a filter in use keeps answering (it gets
   * every add, only its false positives grow), and without one every id is looked up.
   */
  private giveUp(): void {
    this.gaveUp = true;
    this.building = false;
    this.journal = null;
    this.journaled = 0;
    this.opts.log.error(
      { partition: this.opts.partition, ready: this.ready },
      "dedup filter build abandoned (journal full); no more builds for this lease",
    );
  }

  private rebuild(): void {
    this.building = true;
    this.journal = new Uint32Array(2048);
    this.journaled = 0;
    this.opts.log.info({ partition: this.opts.partition }, "dedup filter full; rebuilding from the ledger");
    void this.build();
  }

  /** Builds a filter from the ledger, retrying with backoff until it succeeds or is stopped. */
  private async build(): Promise<void> {
    this.timer = null;
    const { log, partition } = this.opts;
    for (let attempt = 0; !this.stopped && !this.gaveUp; attempt++) {
      try {
        const t0 = performance.now();
        const f = await buildFromLedger(this.opts.ch, this.opts.db, partition, {
          growth: this.growth,
          minCapacity: this.minCapacity,
          bitsPerId: this.bitsPerId,
          cancelled: () => this.stopped || this.gaveUp,
        });
        if (this.stopped || this.gaveUp || this.journal === null) return;
        const read = f.added;
        f.replay(this.journal, this.journaled);
        this.current = f;
        this.journal = null;
        this.journaled = 0;
        this.building = false;
        const seconds = (performance.now() - t0) / 1000;
        m.filterBuildSeconds.observe(seconds);
        m.filterBytes.set({ partition: String(partition) }, f.bytes);
        log.info(
          { partition, ids: read, capacity: f.capacity, bytes: f.bytes, hashes: f.hashes, seconds },
          "dedup filter built from the ledger",
        );
        return;
      } catch (err: unknown) {
        if (this.stopped || this.gaveUp) return;
        log.warn(
          { err, partition, attempt },
          "dedup filter build failed (the ClickHouse lookup or the old filter answers meanwhile); retrying",
        );
        await new Promise((r) => setTimeout(r, Math.min(60_000, 1000 * 2 ** Math.min(attempt, 6))));
      }
    }
  }
}

/** A {@link BloomFilter} that can replay journaled hashes. */
class JournaledBloom extends BloomFilter {
  replay(journal: Uint32Array, length: number): void {
    for (let i = 0; i + 1 < length; i += 2) this.addHashPair(journal[i]!, journal[i + 1]!);
  }
}

/**
 * Reads partition `partition`'s ids from the ledger (`bus_partition = p`, streamed as
 * RowBinary, hashed from their bytes without decoding) into a new filter sized for their count
 * × `growth`. Exported for the bench (bench/ledger.ts).
 */
export async function buildFromLedger(
  ch: ClickHouseClient,
  db: string,
  partition: number,
  o: { growth: number; minCapacity: number; bitsPerId: number; cancelled?: () => boolean },
): Promise<JournaledBloom> {
  const table = sql.ledgerTable(db);
  const [row] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM ${table} WHERE bus_partition = ${lit(partition)}`,
  );
  const n = Number(row?.n ?? 0);
  const f = new JournaledBloom(Math.max(o.minCapacity, Math.ceil(n * o.growth)), o.bitsPerId);
  // NOTE: no `abort_signal`: @clickhouse/client 1.23 leaves its listener on the signal after the
  // response ended (it removes it from the request instead), so stopping a filter whose build
  // had finished logged "The user aborted a request" errors for a finished statement. A
  // cancelled build stops reading instead, which destroys only its own response stream.
  const rs = await ch.exec({
    query: `SELECT id FROM ${ident(db)}.event_ids WHERE bus_partition = ${lit(partition)} FORMAT RowBinary`,
  });
  await readRowBinaryStrings(rs.stream, (bytes, start, end) => f.addBytes(bytes, start, end), o.cancelled);
  return f;
}

/**
 * Calls `onString` with each value of a RowBinary stream of one String column (LEB128 length,
 * then the bytes). A value split across chunks is carried into the next one. Stops, with an
 * error, at the first chunk after `cancelled()` turned true.
 */
export async function readRowBinaryStrings(
  stream: Readable,
  onString: (bytes: Uint8Array, start: number, end: number) => void,
  cancelled: () => boolean = () => false,
): Promise<number> {
  let rest: Buffer | null = null;
  let count = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    // Leaving the loop destroys the stream (and its connection), ending the server's query.
    if (cancelled()) throw new Error("ledger read cancelled");
    const buf: Buffer = rest === null ? chunk : Buffer.concat([rest, chunk]);
    let i = 0;
    for (;;) {
      let len = 0;
      let shift = 0;
      let j = i;
      let complete = false;
      while (j < buf.length) {
        const b = buf[j++]!;
        len += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (b < 0x80) {
          complete = true;
          break;
        }
      }
      if (!complete || j + len > buf.length) break;
      onString(buf, j, j + len);
      count++;
      i = j + len;
    }
    rest = i === buf.length ? null : buf.subarray(i);
    // Back to the event loop between chunks: an async iterator over a stream with data buffered
    // resolves in microtasks, so without this a build starves timers. Measured: the partitions'
    // lease renewals were late, every worker stopped at its write deadline and the bus
    // redelivered (rewrite records, a ~10 s stall of the ingest bench's end to end).
    await new Promise((r) => setImmediate(r));
  }
  if (rest !== null) throw new Error(`ledger stream ended inside a value (${rest.length} bytes left)`);
  return count;
}

/**
 * The ledger rows of `ids` (the sink's lookup step), asking ClickHouse only about ids the
 * filter cannot rule out. `beforeEach` runs before every statement (the worker's lease fence).
 */
export async function lookupLedger(
  ch: ClickHouseClient,
  db: string,
  ids: readonly string[],
  filter: LedgerFilter | null,
  beforeEach: () => void = () => undefined,
): Promise<Map<string, LedgerEntry>> {
  let asked = ids;
  if (filter?.ready === true) {
    asked = ids.filter((id) => filter.mayContain(id));
    m.filterSkipped.inc(ids.length - asked.length);
  }
  m.filterAsked.inc(asked.length);
  const known = new Map<string, LedgerEntry>();
  for (const q of sql.ledgerLookups(db, asked)) {
    beforeEach();
    const found = await queryRows<{ id: string; fp: string; customer: string; type: string; ts_ms: string }>(
      ch,
      q,
    );
    for (const r of found)
      known.set(r.id, { fp: r.fp, customer: r.customer, type: r.type, ts: Number(r.ts_ms) });
  }
  return known;
}

/** A ledger row as the lookup returns it: the winner's fingerprint and its event-row key. */
export interface LedgerEntry {
  fp: string;
  customer: string;
  type: string;
  ts: number;
}
