import { usageSnapshotter, type CloseDeps } from "../billing/index.js";
import type { EdgeDeps } from "./app.js";

/**
 * The close's dependencies as the edge holds them, for pricing live with the close's own path
 * (the upcoming-invoice route and the customer page's estimate): the edge's usage reads, its
 * catalog and invoice store, the configured grace, prefix and backfill horizon. Nothing the edge
 * does with them stores an invoice.
 */
export function closeDepsOf(deps: EdgeDeps): CloseDeps {
  const { config } = deps;
  return {
    catalog: deps.catalog,
    invoices: deps.invoices.store,
    snapshots: usageSnapshotter(deps.usage),
    watermark: () => deps.watermarks.current(),
    log: deps.log,
    settings: {
      graceMs: config.close.graceMs,
      issuerPrefix: config.close.invoicePrefix,
      backfillDays: config.limits.backfillDays,
    },
  };
}
