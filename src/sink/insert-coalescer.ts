import { insertRowBinary, RowBinaryWriter, sql, type ClickHouseClient } from "../clickhouse/index.js";
import { deferred, type Deferred } from "../lib/deferred.js";
import type { EventRow, LedgerRow, RewriteRow } from "./dedup.js";
import { sinkMetrics as m } from "./metrics.js";

/** What one partition's write hands in: the rows dedup() decided to write. */
export interface InsertRows {
  ledger: readonly LedgerRow[];
  rewritten: readonly RewriteRow[];
  rows: readonly EventRow[];
}

/** Asked before every statement that would carry a participant's rows (its partition lease). */
export interface Fence {
  mayWrite(): boolean;
}

/** `written`: all three inserts confirmed. `abandon`: the fence closed first; not (all) written. */
export type InsertOutcome = "written" | "abandon";

interface Entry {
  rows: InsertRows;
  fence: Fence;
  done: Deferred<InsertOutcome>;
}

/** Column order of each table's RowBinary rows; must match the writers below. */
const ledgerColumns = ["id", "customer", "type", "ts", "fp", "bus_partition", "seen_day"] as const;
const rewriteColumns = ["customer", "type", "ts", "id", "recorded_at"] as const;
const eventColumns = [
  "customer",
  "type",
  "ts",
  "id",
  "received",
  "source",
  "prop_keys",
  "prop_values",
] as const;

export function writeLedgerRow(w: RowBinaryWriter, r: LedgerRow): void {
  w.string(r.id);
  w.string(r.customer);
  w.string(r.type);
  w.int64(r.ts);
  w.string(r.fp);
  w.uint16(r.bus_partition);
  w.date(r.seen_day);
}

export function writeRewriteRow(w: RowBinaryWriter, r: RewriteRow): void {
  w.string(r.customer);
  w.string(r.type);
  w.int64(r.ts);
  w.string(r.id);
  w.dateTimeUtc(r.recorded_at);
}

export function writeEventRow(w: RowBinaryWriter, r: EventRow): void {
  w.string(r.customer);
  w.string(r.type);
  w.int64(r.ts);
  w.string(r.id);
  w.int64(r.received);
  w.string(r.source);
  w.strings(r.prop_keys);
  w.strings(r.prop_values);
}

/**
 * Shares the sink's insert statements between partition workers: the rows that the workers of
 * one flush tick hand in go to ClickHouse as one `INSERT` per table (ledger, rewrite records,
 * events, in that order) instead of one per partition. Fewer, larger inserts: fewer requests,
 * and fewer new parts for ClickHouse to write and merge.
 *
 * Invariants:
 * - Only the statements are shared. Each worker still looks its ids up, has its rows written and
 *   acks serially, one write at a time for its partition; it waits for all three statements
 *   before acking, exactly as with its own inserts.
 * - A statement carries a worker's rows only if that worker's {@link Fence} allows writing
 *   right before it is sent (checked after encoding, with nothing awaited until the send). A
 *   worker whose lease is ending is left out of that statement and every later one and told
 *   `abandon`, like a worker that stopped between its own statements.
 * - A failed statement fails every worker whose rows it carried (they retry, or isolate a data
 *   error with `solo` writes, which never share a statement with another worker's rows).
 *
 * When to send: a worker {@link open}s a ticket when its write begins (before the lookup) and
 * submits its rows when the lookup is done. A group is sent once no opened ticket is still
 * looking up, or `maxGatherMs` after its first submission, whichever is first; workers flush
 * on a shared linger tick (see partition-worker), so their lookups finish close together.
 */
export class InsertCoalescer {
  private readonly ledgerTable: string;
  private readonly rewritesTable: string;
  private readonly eventsTable: string;
  /** Tickets opened for a shared write whose rows are not submitted yet. */
  private pending = 0;
  private gathered: Entry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private insertsSoFar = 0;

  constructor(
    private readonly ch: ClickHouseClient,
    db: string,
    private readonly maxGatherMs: number,
    /** Fault injection (tests only), see {@link afterInsert}. */
    private readonly crashAfterInsert = 0,
  ) {
    this.ledgerTable = sql.ledgerTable(db);
    this.rewritesTable = sql.rewritesTable(db);
    this.eventsTable = sql.eventsTable(db);
  }

  /**
   * Starts one write. `solo`: its rows get statements of their own (data-error isolation must
   * know that a rejected statement held only these rows), sent as soon as they are submitted.
   */
  open(solo = false): InsertTicket {
    if (!solo) this.pending++;
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      if (!solo) this.pending--;
      return true;
    };
    return {
      submit: (rows, fence) => {
        if (!settle()) throw new Error("insert ticket already used");
        const entry: Entry = { rows, fence, done: deferred<InsertOutcome>() };
        if (solo) {
          void this.write([entry]);
        } else {
          this.gathered.push(entry);
          this.schedule();
        }
        return entry.done.promise;
      },
      close: () => {
        if (settle() && !solo) this.schedule();
      },
    };
  }

  private schedule(): void {
    if (this.gathered.length === 0) return;
    if (this.pending === 0) {
      this.sendGathered();
    } else if (this.timer === null) {
      this.timer = setTimeout(() => this.sendGathered(), this.maxGatherMs);
    }
  }

  private sendGathered(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const group = this.gathered;
    this.gathered = [];
    if (group.length > 0) void this.write(group);
  }

  /** Ledger rows, then rewrite records, then event rows: the order dedup() relies on. */
  private async write(group: Entry[]): Promise<void> {
    m.insertGroupWorkers.observe(group.length);
    let live = group;
    try {
      live = await this.insert(live, this.ledgerTable, ledgerColumns, (e) => e.rows.ledger, writeLedgerRow);
      live = await this.insert(
        live,
        this.rewritesTable,
        rewriteColumns,
        (e) => e.rows.rewritten,
        writeRewriteRow,
        false,
      );
      live = await this.insert(live, this.eventsTable, eventColumns, (e) => e.rows.rows, writeEventRow);
    } catch (err: unknown) {
      // Every worker whose rows the failed statement carried (those fenced out earlier were
      // already told `abandon`; a settled promise ignores this).
      for (const e of live) e.done.reject(err);
      return;
    }
    for (const e of live) e.done.resolve("written");
  }

  /**
   * One statement with the rows of the entries whose fence still allows writing; the others
   * are told `abandon` and dropped. Returns the entries still in the write. No statement when
   * none of them has rows for this table.
   */
  private async insert<R>(
    entries: Entry[],
    table: string,
    columns: readonly string[],
    rowsOf: (e: Entry) => readonly R[],
    writeRow: (w: RowBinaryWriter, r: R) => void,
    crashPoint = true,
  ): Promise<Entry[]> {
    let live = this.fenced(entries);
    for (;;) {
      const w = new RowBinaryWriter();
      const encoded: Entry[] = [];
      for (const e of live) {
        const mark = w.length;
        try {
          for (const r of rowsOf(e)) {
            writeRow(w, r);
          }
          encoded.push(e);
        } catch (err: unknown) {
          // A value its column cannot hold (RowEncodingError, permanent): only this worker's
          // write fails, and its data-error isolation finds the message; the others go on.
          w.rewind(mark);
          e.done.reject(err);
        }
      }
      live = encoded;
      if (w.length === 0) return live;
      // Encoding a large group takes milliseconds: check the fences again right before sending
      // (nothing is awaited between this check and the request), and re-encode without the rows
      // of a worker whose fence closed meanwhile.
      const still = this.fenced(live);
      if (still.length < live.length) {
        live = still;
        continue;
      }
      await insertRowBinary(this.ch, table, columns, w.bytes());
      m.insertStatements.inc();
      if (crashPoint) this.afterInsert();
      return live;
    }
  }

  /** Entries whose fence allows a statement now; the others are resolved `abandon`. */
  private fenced(entries: Entry[]): Entry[] {
    const out: Entry[] = [];
    for (const e of entries) {
      if (e.fence.mayWrite()) out.push(e);
      else e.done.resolve("abandon");
    }
    return out;
  }

  /**
   * Fault injection (tests only): die like a killed process after the Nth ledger or events
   * insert statement, before any ack. Odd N falls between a ledger insert and its events insert.
   */
  private afterInsert(): void {
    if (this.crashAfterInsert > 0 && ++this.insertsSoFar === this.crashAfterInsert)
      process.kill(process.pid, "SIGKILL");
  }
}

/** One worker's place in a shared write (see {@link InsertCoalescer.open}). */
export interface InsertTicket {
  /** Hands the rows in; resolves when all three inserts are confirmed (or `abandon`). */
  submit(rows: InsertRows, fence: Fence): Promise<InsertOutcome>;
  /** Gives the ticket up without rows (nothing to write, lookup failed, lease ending). */
  close(): void;
}
