import { Counter, Gauge, Histogram } from "prom-client";
import { registry } from "../observability/index.js";

/** Events accepted into the outbox (JetStream acked), by type; duplicates (same id) counted apart. */
export const outboxEvents = new Counter({
  name: "tally_webhook_outbox_events_total",
  help: "Events written to the webhook outbox, by event type and result (stored, duplicate)",
  labelNames: ["type", "result"] as const,
  registers: [registry],
});

/** Deliveries created by the fan-out (one per event and subscribed endpoint). */
export const deliveriesCreated = new Counter({
  name: "tally_webhook_deliveries_created_total",
  help: "Webhook deliveries created by the fan-out (event x subscribed enabled endpoint)",
  registers: [registry],
});

/** Delivery attempts by outcome: success, retry, failed (schedule exhausted), disabled (410), error kinds. */
export const deliveryAttempts = new Counter({
  name: "tally_webhook_delivery_attempts_total",
  help: "Webhook delivery attempts by outcome (success, retry, exhausted, gone, skipped)",
  labelNames: ["outcome"] as const,
  registers: [registry],
});

/** Seconds one HTTP attempt took (connect to response end, or the timeout). */
export const attemptSeconds = new Histogram({
  name: "tally_webhook_attempt_seconds",
  help: "Duration of one webhook delivery attempt",
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
  registers: [registry],
});

/** Attempts in flight in this dispatcher. */
export const attemptsInflight = new Gauge({
  name: "tally_webhook_attempts_inflight",
  help: "Webhook delivery attempts in flight in this process",
  registers: [registry],
});

/** Deliveries put back because their endpoint already had its share of attempts in flight. */
export const endpointDeferrals = new Counter({
  name: "tally_webhook_endpoint_deferrals_total",
  help: "Deliveries deferred because their endpoint was at TALLY_WEBHOOK_ENDPOINT_CONCURRENCY",
  registers: [registry],
});

/** Usage alerts fired (usage.threshold_crossed emitted). */
export const thresholdsFired = new Counter({
  name: "tally_webhook_thresholds_fired_total",
  help: "usage.threshold_crossed events emitted, by kind (included, spend)",
  labelNames: ["kind"] as const,
  registers: [registry],
});
