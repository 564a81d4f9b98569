import type { Meter } from "../catalog/index.js";
import { queryEvidence, queryUsage, type UsageDeps } from "../usage/index.js";
import type { SnapshotRequest, Snapshotter } from "./close.js";
import type { UsageSnapshot } from "./invoice.js";

/** Customers per usage query when the close asks for a subset of a meter's customers. */
const customersPerQuery = 500;

/**
 * The close's usage reads through the one usage query path (`queryUsage`, as the usage API and
 * the customer page), with the close's receive cut, plus the evidence behind each number
 * (`queryEvidence`: event count and id digest over the same rows). Requests that share a meter,
 * window and cutoff (every customer billed by calendar month in one zone) are answered together:
 * for many customers, one query over all of the meter's customers; for a few, in batches.
 */
export function usageSnapshotter(deps: UsageDeps): Snapshotter {
  return {
    async snapshot(requests: readonly SnapshotRequest[]): Promise<UsageSnapshot[]> {
      const out = new Array<UsageSnapshot>(requests.length);
      const groups = new Map<
        string,
        { meter: Meter; fromMs: number; toMs: number; cutoffMs: number; at: number[] }
      >();
      requests.forEach((r, i) => {
        const k = `${r.meter.key}\u0000${r.meter.version}\u0000${r.fromMs}\u0000${r.toMs}\u0000${r.cutoffMs}`;
        let g = groups.get(k);
        if (g === undefined)
          groups.set(
            k,
            (g = { meter: r.meter, fromMs: r.fromMs, toMs: r.toMs, cutoffMs: r.cutoffMs, at: [] }),
          );
        g.at.push(i);
      });
      for (const g of groups.values()) {
        const customers = [...new Set(g.at.map((i) => requests[i]!.customer))];
        const batches =
          customers.length > 5 * customersPerQuery ? [undefined] : chunk(customers, customersPerQuery);
        const values = new Map<string, string>();
        const evidence = new Map<string, { eventCount: number; idDigest: string }>();
        let watermark = "";
        for (const batch of batches) {
          const req = {
            meter: g.meter,
            fromMs: g.fromMs,
            toMs: g.toMs,
            customers: batch,
            receivedUpToMs: g.cutoffMs,
            maxRows: Math.max(100_000, customers.length + 1),
          };
          const usage = await queryUsage(deps, req);
          watermark = usage.watermark;
          for (const row of usage.data)
            if (row.customer !== undefined) values.set(row.customer, row.value ?? "0");
          for (const [c, e] of await queryEvidence(deps, req)) evidence.set(c, e);
        }
        for (const i of g.at) {
          const customer = requests[i]!.customer;
          const e = evidence.get(customer);
          out[i] = {
            meter: g.meter.key,
            meter_version: g.meter.version,
            cutoff: new Date(g.cutoffMs).toISOString(),
            watermark,
            quantity: values.get(customer) ?? "0",
            event_count: e?.eventCount ?? 0,
            id_digest: e?.idDigest ?? "0".repeat(32),
          };
        }
      }
      return out;
    },
  };
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
