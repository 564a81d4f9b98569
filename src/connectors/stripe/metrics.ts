import { Counter, Histogram } from "prom-client";
import { registry } from "../../observability/index.js";

/** Invoice pushes by outcome: pushed | push_failed | mismatch | skipped. */
export const pushOutcomes = new Counter({
  name: "tally_stripe_push_total",
  help: "Invoice pushes to Stripe by outcome (pushed, push_failed, mismatch, skipped)",
  labelNames: ["outcome"] as const,
  registers: [registry],
});

/** Stripe requests tried again, by reason (rate_limited, connection, 409, 5xx status). */
export const stripeRetries = new Counter({
  name: "tally_stripe_request_retries_total",
  help: "Stripe requests retried by the push (on top of the SDK's own retries), by reason",
  labelNames: ["reason"] as const,
  registers: [registry],
});

/** Seconds one invoice's push took (all its requests, limiter waits included). */
export const pushSeconds = new Histogram({
  name: "tally_stripe_push_seconds",
  help: "Time to push one invoice to Stripe",
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [registry],
});

/** Stripe webhook events by type group and outcome (applied, duplicate, stale, ignored, rejected). */
export const webhookEvents = new Counter({
  name: "tally_stripe_webhook_events_total",
  help: "Stripe webhook deliveries by outcome",
  labelNames: ["outcome"] as const,
  registers: [registry],
});
