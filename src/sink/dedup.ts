import type { tally } from "../gen/proto.js";

type BusEvent = tally.v1.IBusEvent;

/** An event row as inserted into `events` (JSONEachRow). */
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
  bus_partition: number;
  seen_day: string;
}

/** The outcome of deduplicating one sink batch. */
export interface DedupResult {
  rows: EventRow[];
  ledger: LedgerRow[];
  /** Events dropped: a repeat within the batch, or an id the ledger already holds. */
  duplicates: number;
}

/** First pass: ids of a batch in bus order, first occurrence only. */
export function uniqueIds(events: readonly BusEvent[]): string[] {
  const seen = new Set<string>();
  for (const e of events) seen.add(e.id ?? "");
  return [...seen];
}

/**
 * Keeps the first occurrence of each id that the ledger does not hold yet. Pure: the caller
 * looked `known` up in the ledger (partition-serial, so no concurrent writer of these ids).
 *
 * Why presence alone decides: the sink writes `events` first and the ledger second. An id in
 * the ledger therefore has its event row already; a copy with the same id is either a bus
 * redelivery or a client retry (possibly with another timestamp or batch): both must not
 * count again. A crash between the two writes leaves no ledger row, so the redelivered
 * copy is written again as an identical row, which `ReplacingMergeTree` and the
 * one-row-per-id read path collapse.
 */
export function dedup(
  events: readonly BusEvent[],
  known: ReadonlySet<string>,
  partition: number,
  nowMs: number,
): DedupResult {
  const rows: EventRow[] = [];
  const ledger: LedgerRow[] = [];
  const taken = new Set<string>();
  const seenDay = new Date(nowMs).toISOString().slice(0, 10);
  let duplicates = 0;
  for (const e of events) {
    const id = e.id ?? "";
    if (known.has(id) || taken.has(id)) {
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
    ledger.push({
      id,
      customer: e.customer ?? "",
      type: e.type ?? "",
      ts,
      bus_partition: partition,
      seen_day: seenDay,
    });
  }
  return { rows, ledger, duplicates };
}
