import { tally } from "../gen/proto.js";
import { queryRows, sql, type ClickHouseClient } from "../clickhouse/index.js";
import { uniqueIds } from "./dedup.js";

/**
 * True when every event of an encoded bus message is settled: its id is in the dedup ledger and
 * the row of the copy that won is in `events` (so the event is countable, whichever copy this
 * message holds). An undecodable message is never settled.
 *
 * Used by the watermark to tell an acked leftover of an unclean nats-server stop (settled: safe to
 * delete) from a message that only *looks* acked (a stream that lost its tail in the crash reuses
 * sequence numbers below its consumer's restored ack floor): that one is not settled and must
 * hold the watermark until the sink wrote it.
 */
export async function messageSettled(ch: ClickHouseClient, db: string, data: Uint8Array): Promise<boolean> {
  let events: tally.v1.IBusEvent[];
  try {
    events = tally.v1.BusBatch.decode(data).events;
  } catch {
    return false;
  }
  const ids = uniqueIds(events);
  const winners = new Map<string, { customer: string; type: string; ts: number; id: string }>();
  for (const q of sql.ledgerLookups(db, ids)) {
    const rows = await queryRows<{ id: string; customer: string; type: string; ts_ms: string }>(ch, q);
    for (const r of rows)
      winners.set(r.id, { customer: r.customer, type: r.type, ts: Number(r.ts_ms), id: r.id });
  }
  if (winners.size < ids.length) return false;
  const written = new Set<string>();
  for (const q of sql.writtenEvents(db, [...winners.values()])) {
    for (const r of await queryRows<{ id: string }>(ch, q)) written.add(r.id);
  }
  return ids.every((id) => written.has(id));
}
