import { queryRows, rollupFills, type ClickHouseClient } from "../clickhouse/index.js";

/** One recorded fill unit: the events received in `[fromMs, toMs)`, under `token`. */
export interface FillUnit {
  fromMs: number;
  toMs: number;
  token: string;
}

/** What a read may take from a meter version's rollup. */
export interface RollupChain {
  /** Every event received before this instant is in the chain's fills; none after it. */
  horizonMs: number;
  /** Recorded fills not on the chain (a racing filler's overlapping unit): their rows are skipped. */
  excludedTokens: string[];
}

/**
 * The chain a read uses, chosen deterministically from the recorded units: from receive time 0,
 * repeatedly the unit starting where the chain ends, the longest first, then the smallest token.
 * One filler writes one unit after another, so normally every unit is on the chain; units of a
 * second, racing filler that overlap it are excluded (their rows would count events twice), and
 * units after a gap stay out until the gap is filled. Null when no unit starts at 0 (a meter
 * version whose rollup is not built yet: reads take the raw path).
 */
export function chainOf(units: readonly FillUnit[]): RollupChain | null {
  const sorted = [...units].sort(
    (a, b) => a.fromMs - b.fromMs || b.toMs - a.toMs || (a.token < b.token ? -1 : a.token > b.token ? 1 : 0),
  );
  let end = 0;
  const on = new Set<string>();
  for (const u of sorted) {
    if (u.fromMs === end && u.toMs > end) {
      on.add(u.token);
      end = u.toMs;
    }
  }
  if (on.size === 0) return null;
  // Units starting at or after the end are already out (rows received after the horizon).
  const excludedTokens = sorted.filter((u) => !on.has(u.token) && u.fromMs < end).map((u) => u.token);
  return { horizonMs: end, excludedTokens };
}

/** Reads a meter version's recorded fills and returns its chain (see {@link chainOf}). */
export async function readChain(
  ch: ClickHouseClient,
  db: string,
  meter: { key: string; version: number },
): Promise<RollupChain | null> {
  const rows = await queryRows<{ r_from: string; r_to: string; token: string }>(ch, rollupFills(db, meter));
  return chainOf(rows.map((r) => ({ fromMs: Number(r.r_from), toMs: Number(r.r_to), token: r.token })));
}
