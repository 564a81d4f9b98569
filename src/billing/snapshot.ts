import { gaugeAggregations, type Meter } from "../catalog/index.js";
import { inListGroups, lit } from "../clickhouse/index.js";
import {
  emptyUsageValue,
  queryEvidence,
  queryTotals,
  queryUsage,
  type UsageDeps,
  type UsageTotal,
} from "../usage/index.js";
import type { SnapshotRequest, Snapshotter } from "./close.js";
import type { UsageSnapshot } from "./invoice.js";

/**
 * Above this many customers in one window, one query reads every customer's events (a full scan
 * the close needs anyway); below, queries name their customers, grouped by `inListGroups` like
 * every IN list (the server's default `max_query_size` is 256 KiB).
 */
const allCustomersAbove = 50_000;

/** The digest of no events. */
const emptyDigest = "0".repeat(32);

/**
 * The close's usage reads, with the close's receive cut and the evidence behind each number
 * (event count and id digest over the same rows). Requests sharing a window and cutoff (every
 * customer billed by calendar month in one zone) are answered together: every meter with an
 * aggregation computed in ClickHouse in ONE scan (`queryTotals`: the same meter translation,
 * collapse and value rules as `queryUsage`, checked against it in test/usage-totals.test.ts);
 * gauges (time-weighted, peak) through `queryUsage` + `queryEvidence` per meter. For very many
 * customers one query covers all of them; otherwise batches that name their customers (the
 * events' sort key starts with the customer, so such a query reads only their rows; the close
 * asks for customers in key order, so a batch is a contiguous range).
 */
export function usageSnapshotter(deps: UsageDeps): Snapshotter {
  return {
    async snapshot(requests: readonly SnapshotRequest[]): Promise<UsageSnapshot[]> {
      const out = new Array<UsageSnapshot>(requests.length);
      const groups = new Map<string, { fromMs: number; toMs: number; cutoffMs: number; at: number[] }>();
      requests.forEach((r, i) => {
        const k = `${r.fromMs}\u0000${r.toMs}\u0000${r.cutoffMs}`;
        let g = groups.get(k);
        if (g === undefined)
          groups.set(k, (g = { fromMs: r.fromMs, toMs: r.toMs, cutoffMs: r.cutoffMs, at: [] }));
        g.at.push(i);
      });
      for (const g of groups.values()) {
        const meters = new Map<string, Meter>();
        for (const i of g.at) meters.set(meterId(requests[i]!.meter), requests[i]!.meter);
        const customers = [...new Set(g.at.map((i) => requests[i]!.customer))];
        const batches = customers.length > allCustomersAbove ? [undefined] : inListGroups(customers, lit);
        const sqlMeters = [...meters.values()].filter((m) => !gaugeAggregations.has(m.aggregation));
        const gauges = [...meters.values()].filter((m) => gaugeAggregations.has(m.aggregation));
        // meter id → customer → total
        const found = new Map<string, Map<string, UsageTotal>>();
        for (const m of meters.values()) found.set(meterId(m), new Map());
        let watermark = "";
        for (const batch of batches) {
          const scope = {
            fromMs: g.fromMs,
            toMs: g.toMs,
            customers: batch,
            receivedUpToMs: g.cutoffMs,
          };
          if (sqlMeters.length > 0) {
            const r = await queryTotals(deps, { ...scope, meters: sqlMeters });
            watermark = r.watermark;
            sqlMeters.forEach((m, j) => {
              const into = found.get(meterId(m))!;
              for (const [c, t] of r.totals[j]!) into.set(c, t);
            });
          }
          for (const meter of gauges) {
            const req = { ...scope, meter, maxRows: Math.max(100_000, customers.length + 1) };
            const usage = await queryUsage(deps, req);
            watermark = usage.watermark;
            const evidence = await queryEvidence(deps, req);
            const into = found.get(meterId(meter))!;
            for (const row of usage.data) {
              if (row.customer === undefined) continue;
              const e = evidence.get(row.customer);
              into.set(row.customer, {
                value: row.value,
                eventCount: e?.eventCount ?? 0,
                idDigest: e?.idDigest ?? emptyDigest,
              });
            }
          }
        }
        for (const i of g.at) {
          const { meter, customer } = requests[i]!;
          const t = found.get(meterId(meter))!.get(customer);
          out[i] = {
            meter: meter.key,
            meter_version: meter.version,
            cutoff: new Date(g.cutoffMs).toISOString(),
            watermark,
            quantity: t?.value ?? emptyUsageValue(meter.aggregation) ?? "0",
            event_count: t?.eventCount ?? 0,
            id_digest: t?.idDigest ?? emptyDigest,
          };
        }
      }
      return out;
    },
  };
}

const meterId = (m: Meter) => `${m.key}\u0000${m.version}`;
