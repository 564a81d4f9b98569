import { Counter, Histogram } from "prom-client";
import { registry } from "../../observability/index.js";

/** Xero API calls by method and outcome (ok, 401, 429, 5xx, network, refused). */
export const xeroCalls = new Counter({
  name: "tally_xero_calls_total",
  help: "Xero API calls by method and outcome",
  labelNames: ["method", "outcome"] as const,
  registers: [registry],
});

/** Journal entries by push outcome (pushed, failed, requeued). */
export const xeroJournals = new Counter({
  name: "tally_xero_journals_total",
  help: "Journal entries pushed to Xero by outcome (pushed, failed, requeued)",
  labelNames: ["outcome"] as const,
  registers: [registry],
});

/** Journals per ManualJournals request. */
export const xeroBatchSize = new Histogram({
  name: "tally_xero_batch_journals",
  help: "Manual journals per Xero request",
  buckets: [1, 2, 5, 10, 20, 50, 100, 200],
  registers: [registry],
});
