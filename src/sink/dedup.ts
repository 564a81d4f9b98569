import type { tally } from "../gen/proto.js";
import { fnv1a32 } from "../lib/hash.js";

type BusEvent = tally.v1.IBusEvent;

/** An event row as inserted into `events` (RowBinary, see insert-coalescer.ts). */
export interface EventRow {
  customer: string;
  type: string;
  ts: number;
  id: string;
  received: number;
  source: string;
  prop_keys: string[];
  prop_values: string[];
}

/** A dedup-ledger row as inserted into `event_ids`. */
export interface LedgerRow {
  id: string;
  customer: string;
  type: string;
  ts: number;
  fp: string;
  bus_partition: number;
  seen_day: string;
}

/** A rewrite record as inserted into `event_rewrites`: this id gets a second, identical row. */
export interface RewriteRow {
  customer: string;
  type: string;
  ts: number;
  id: string;
  /** `YYYY-MM-DD hh:mm:ss` (UTC); informational. */
  recorded_at: string;
}

/** The outcome of deduplicating one sink batch. */
export interface DedupResult {
  /** Rows to write to `events`: new events and idempotent rewrites of ledgered ones. */
  rows: EventRow[];
  /** Ledger rows to write (new ids only). */
  ledger: LedgerRow[];
  /**
   * Events dropped: another copy of the id (different content or timestamp) already won, or an
   * identical copy whose event row is already written (a client retry, a redelivery).
   */
  duplicates: number;
  /** Ledgered events whose row was not found written, written now (redelivery after a crash). */
  rewrites: number;
  /** Records of those rewrites; written before the rows, so reads know which ids to collapse. */
  rewritten: RewriteRow[];
}

/**
 * Fingerprint of everything that lands in an event row except `received`. Two copies with the
 * same id and fingerprint produce identical rows (same sort key), so rewriting one is idempotent.
 * 64 bits from two FNV-1a passes: cheap; a collision (a differing retry taken for the winner)
 * would be recorded as a rewrite and still counted once, with the value of one of the copies.
 */
export function fingerprint(e: BusEvent): string {
  const keys = e.propKeys ?? [];
  const values = e.propValues ?? [];
  let s = `${e.customer ?? ""}\u0000${e.type ?? ""}\u0000${Number(e.timeMs ?? 0)}\u0000${e.source ?? ""}`;
  for (let i = 0; i < keys.length; i++) s += `\u0000${keys[i]}\u0001${values[i] ?? ""}`;
  return fnv1a32(s).toString(16).padStart(8, "0") + fnv1a32(`\u0002${s}`).toString(16).padStart(8, "0");
}

/** Distinct ids of a batch. */
export function uniqueIds(events: readonly BusEvent[]): string[] {
  const seen = new Set<string>();
  for (const e of events) seen.add(e.id ?? "");
  return [...seen];
}

/**
 * Decides, per event, whether it is written. Pure: the caller looked `known` (id → fingerprint
 * of the winning copy) up in the ledger and, for ids known with the same fingerprint as a copy
 * here, which of those have their event row `written`; it is the only writer of these ids (one
 * serial worker per leased bus partition), so nothing changes either between lookup and writes.
 *
 * The ledger is written *before* the events, and the ack after both:
 * - id unknown: this copy wins; write ledger row and event row.
 * - id known with the same fingerprint, row written: an identical retry (the SDK keeps the time
 *   it stamped) or a redelivery after the write: drop, like any duplicate.
 * - id known with the same fingerprint, row not found: the winning copy redelivered after a
 *   crash between the ledger and events inserts (or an insert whose outcome was unknown): write
 *   the row again with a rewrite record (the row may yet appear: identical, and collapsed).
 * - id known with another fingerprint: a retry with another timestamp, batch or content: drop.
 * So all rows ever written for an id are identical, and every read path that collapses rows
 * by id (`LIMIT 1 BY id`, `GROUP BY id`, `uniqExact(id)`) counts each event exactly once.
 */
export function dedup(
  events: readonly BusEvent[],
  known: ReadonlyMap<string, string>,
  partition: number,
  nowMs: number,
  written: ReadonlySet<string>,
): DedupResult {
  const rows: EventRow[] = [];
  const rewritten: RewriteRow[] = [];
  const ledger: LedgerRow[] = [];
  const taken = new Set<string>();
  const seenDay = new Date(nowMs).toISOString().slice(0, 10);
  const recordedAt = new Date(nowMs).toISOString().slice(0, 19).replace("T", " ");
  let duplicates = 0;
  let rewrites = 0;
  for (const e of events) {
    const id = e.id ?? "";
    if (taken.has(id)) {
      duplicates++;
      continue;
    }
    const fp = fingerprint(e);
    const winner = known.get(id);
    if (winner !== undefined && (winner !== fp || written.has(id))) {
      duplicates++;
      continue;
    }
    taken.add(id);
    const ts = Number(e.timeMs ?? 0);
    rows.push({
      customer: e.customer ?? "",
      type: e.type ?? "",
      ts,
      id,
      received: Number(e.receivedMs ?? 0),
      source: e.source ?? "",
      prop_keys: e.propKeys ?? [],
      prop_values: e.propValues ?? [],
    });
    if (winner === undefined) {
      ledger.push({
        id,
        customer: e.customer ?? "",
        type: e.type ?? "",
        ts,
        fp,
        bus_partition: partition,
        seen_day: seenDay,
      });
    } else {
      rewrites++;
      rewritten.push({ customer: e.customer ?? "", type: e.type ?? "", ts, id, recorded_at: recordedAt });
    }
  }
  return { rows, ledger, duplicates, rewrites, rewritten };
}
