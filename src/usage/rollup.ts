import { randomUUID } from "node:crypto";
import { gaugeAggregations, type Meter } from "../catalog/index.js";
import {
  queryRows,
  rollupFill,
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

/** Every event time: a fill unit takes what was received in its hours, whenever it happened. */
const allTime = { fromMs: -8.64e15, toMs: 8.64e15 };

/** What one {@link fillRollup} call did. */
export type FillOutcome =
  | { kind: "filled"; fromMs: number; toMs: number; token: string }
  | { kind: "up-to-date"; horizonMs: number }
  | { kind: "skipped"; reason: "gauge" }
  /** A rewrite was recorded while the fill ran: its rows are left unrecorded (never read). */
  | { kind: "retry" };

export interface FillOptions {
  /** Watermark (ms) the fill may rely on; read from `deps.watermarks` when omitted. */
  watermarkMs?: number | undefined;
  /** @default defaultRollupSettleMs */
  settleMs?: number | undefined;
  /** Test hook: runs after the rows are written and before the fill is recorded. */
  beforeRecord?: (() => Promise<void>) | undefined;
}

/**
 * Extends one meter version's rollup to the newest closed receive hour: writes the partial
 * aggregates of every event received in `[horizon, closed)` in ONE statement under a fresh
 * token, then records the unit in `rollup_fills`. Exactly once without transactions:
 * - rows count only once their unit is recorded, and the record is written after the INSERT
 *   returned, so a crash mid-fill leaves rows nobody reads, and the next fill (new token)
 *   starts again from the recorded horizon;
 * - the rows come from the same collapsed read as every usage answer (`dedupedEvents`), and the
 *   rewrite records in scope are counted before and after: if one appeared meanwhile, the unit
 *   is not recorded (a copy may have been read twice) and the next call fills it again;
 * - `closed` = the watermark minus the settle margin, rounded down to the hour: every event
 *   received before it is in ClickHouse, so no later event lands in a filled hour (late events
 *   for old event times land in the receive hour they arrive in, which is filled later).
 * A first fill (no unit yet, or a new meter version) builds the whole history in one unit.
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
  const spec = {
    ...usageSpec({ meter, ...allTime }, meter.group_by ?? [], { size: "none", tz: "UTC" }),
    receivedFromMs: fromMs,
    receivedUpToMs: closed - 1,
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
  await deps.clickhouse.command({ query: rollupRecordFill(deps.database, meter, fromMs, closed, token) });
  return { kind: "filled", fromMs, toMs: closed, token };
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
        const out = await fillRollup(this.deps, meter, { settleMs: this.settleMs });
        if (out.kind === "filled") {
          this.log.info(
            { meter: meter.key, version: meter.version, from: out.fromMs, to: out.toMs },
            "usage rollup filled",
          );
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
