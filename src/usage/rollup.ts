import { randomUUID } from "node:crypto";
import { gaugeAggregations, type Meter } from "../catalog/index.js";
import {
  queryRows,
  rollupFill,
  rollupReceiveHistogram,
  rollupReceiveMs,
  rollupRecordFill,
  usageRewriteCount,
  type SqlAggregation,
} from "../clickhouse/index.js";
import type { Logger } from "../observability/index.js";
import { readChain } from "./rollup-chain.js";
import { usageSpec, type UsageDeps } from "./query.js";

/**
 * How long after an instant the watermark must be before the receive hour ending there is
 * filled. The watermark speaks of 2xx times and `received` is stamped before the bus publish,
 * so an event stamped just before an hour's end can be written a little after it; this margin
 * covers that publish (the publisher's deadline is seconds) many times over.
 * @default 300_000 (5 minutes)
 */
export const defaultRollupSettleMs = 300_000;

/**
 * Most rows one fill unit reads (by receive hour; an hour with more is a unit of its own). Keeps
 * every fill statement's memory and time bounded, whatever the history a new meter version
 * builds: at 100 M events one unit for the whole month needed more than ClickHouse's 8 GiB
 * per-query limit (measured, bench/RESULTS-usage.md), and would outlast the client's timeout.
 * @default 2_000_000
 */
export const defaultRollupMaxUnitEvents = 2_000_000;

/** Every event time: a fill unit takes what was received in its hours, whenever it happened. */
const allTime = { fromMs: -8.64e15, toMs: 8.64e15 };

/** What one {@link fillRollup} call did. */
export type FillOutcome =
  /** `more`: closed hours are left after this unit (call again). */
  | { kind: "filled"; fromMs: number; toMs: number; token: string; more: boolean }
  | { kind: "up-to-date"; horizonMs: number }
  | { kind: "skipped"; reason: "gauge" }
  /** A rewrite was recorded while the fill ran: its rows are left unrecorded (never read). */
  | { kind: "retry" };

export interface FillOptions {
  /** Watermark (ms) the fill may rely on; read from `deps.watermarks` when omitted. */
  watermarkMs?: number | undefined;
  /** @default defaultRollupSettleMs */
  settleMs?: number | undefined;
  /** @default defaultRollupMaxUnitEvents */
  maxUnitEvents?: number | undefined;
  /** Test hook: runs after the rows are written and before the fill is recorded. */
  beforeRecord?: (() => Promise<void>) | undefined;
}

/**
 * Extends one meter version's rollup by one unit toward the newest closed receive hour: writes
 * the partial aggregates of every event received in `[horizon, end)` in ONE statement under a
 * fresh token, then records the unit in `rollup_fills`. `end` is `closed`, or an earlier hour
 * so that the unit reads at most `maxUnitEvents` rows (`more` then says to call again). Exactly once without transactions:
 * - rows count only once their unit is recorded, and the record is written after the INSERT
 *   returned, so a crash mid-fill leaves rows nobody reads, and the next fill (new token)
 *   starts again from the recorded horizon;
 * - the rows come from the same collapsed read as every usage answer (`dedupedEvents`), and the
 *   rewrite records in scope are counted before and after: if one appeared meanwhile, the unit
 *   is not recorded (a copy may have been read twice) and the next call fills it again;
 * - `closed` = the watermark minus the settle margin, rounded down to the hour: every event
 *   received before it is in ClickHouse, so no later event lands in a filled hour (late events
 *   for old event times land in the receive hour they arrive in, which is filled later).
 * A first fill (no unit yet, or a new meter version) starts at receive time 0; the history is
 * built in as many bounded units as it takes (reads take the raw path until the first unit is
 * recorded, and then read the rest of the history from the open tail until it is filled).
 */
export async function fillRollup(
  deps: UsageDeps,
  meter: Meter,
  opts: FillOptions = {},
): Promise<FillOutcome> {
  if (gaugeAggregations.has(meter.aggregation)) return { kind: "skipped", reason: "gauge" };
  const watermark = opts.watermarkMs ?? (await deps.watermarks.current());
  const settled = watermark - (opts.settleMs ?? defaultRollupSettleMs);
  const closed = settled - (((settled % rollupReceiveMs) + rollupReceiveMs) % rollupReceiveMs);
  const chain = await readChain(deps.clickhouse, deps.database, meter);
  const fromMs = chain?.horizonMs ?? 0;
  if (closed <= fromMs) return { kind: "up-to-date", horizonMs: fromMs };
  // The unit: whole receive hours from the horizon, as many as fit in maxUnitEvents (at least one).
  const maxEvents = opts.maxUnitEvents ?? defaultRollupMaxUnitEvents;
  const hours = await queryRows<{ h: string; n: string }>(
    deps.clickhouse,
    rollupReceiveHistogram(deps.database, meter.event_type, fromMs, closed),
  );
  let toMs = closed;
  let events = 0;
  for (const { h, n } of hours) {
    if (events > 0 && events + Number(n) > maxEvents) {
      toMs = Number(h);
      break;
    }
    events += Number(n);
  }
  const spec = {
    ...usageSpec({ meter, ...allTime }, meter.group_by ?? [], { size: "none", tz: "UTC" }),
    receivedFromMs: fromMs,
    receivedUpToMs: toMs - 1,
  };
  const token = randomUUID();
  const countSql = usageRewriteCount(deps.database, spec, "range");
  const recorded = async () => Number((await queryRows<{ n: string }>(deps.clickhouse, countSql))[0]?.n ?? 0);
  const before = await recorded();
  await deps.clickhouse.command({
    query: rollupFill(
      deps.database,
      spec,
      meter,
      token,
      { kind: before === 0 ? "none" : "recorded" },
      meter.aggregation as SqlAggregation,
    ),
  });
  if ((await recorded()) !== before) return { kind: "retry" };
  await opts.beforeRecord?.();
  await deps.clickhouse.command({ query: rollupRecordFill(deps.database, meter, fromMs, toMs, token) });
  return { kind: "filled", fromMs, toMs, token, more: toMs < closed };
}

/**
 * Keeps every meter's rollup filled up to the newest closed hour, in the background: each round
 * fills each current meter version (a new version builds its history first; reads take the raw
 * path until then). Run ONE filler per database: two would not double count (readers pick one
 * chain of units) but would do the work twice. The close role runs it under its leader lease
 * (`when` = the lease is held; `TALLY_ROLLUP_INTERVAL`).
 */
export class RollupFiller {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly deps: UsageDeps,
    private readonly meters: () => readonly Meter[],
    private readonly log: Logger,
    private readonly intervalMs = 60_000,
    private readonly settleMs = defaultRollupSettleMs,
    /** Checked before each round (and each meter): false skips it (e.g. not the leader). */
    private readonly when: () => boolean = () => true,
  ) {}

  /** One round over every meter; errors are logged and retried next round. */
  async round(): Promise<void> {
    for (const meter of this.meters()) {
      // A lost lease stops the round between meters: a fill already running finishes (a racing
      // filler costs work, never a double count).
      if (!this.when()) return;
      try {
        // Unit after unit (each bounded) until the newest closed hour; the lease is checked
        // between units.
        for (;;) {
          const out = await fillRollup(this.deps, meter, { settleMs: this.settleMs });
          if (out.kind !== "filled") break;
          this.log.info(
            { meter: meter.key, version: meter.version, from: out.fromMs, to: out.toMs },
            "usage rollup filled",
          );
          if (!out.more || !this.when()) break;
        }
      } catch (err: unknown) {
        this.log.warn({ err, meter: meter.key, version: meter.version }, "usage rollup fill failed");
      }
    }
  }

  /**
   * Runs a round every `intervalMs`, the first one interval after the start (lazy: a process
   * that starts and stops within an interval, such as a test, never fills).
   */
  start(): void {
    const tick = () => {
      this.running = this.round().finally(() => {
        this.running = null;
        if (this.timer !== null) this.timer = setTimeout(tick, this.intervalMs);
      });
    };
    this.timer = setTimeout(tick, this.intervalMs);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }
}
