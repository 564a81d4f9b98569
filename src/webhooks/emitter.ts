/*
 * The contract between the parts that raise events (close, Stripe push and webhooks, Xero push,
 * reconciliation, usage alerts) and the outbound webhook outbox (src/webhooks).
 */

/** Every event type an endpoint can subscribe to. */
export const webhookEventTypes = [
  "invoice.finalized",
  "invoice.pushed",
  "invoice.push_failed",
  "invoice.paid",
  "journal.push_failed",
  "reconciliation.mismatch",
  "usage.threshold_crossed",
] as const;

export type WebhookEventType = (typeof webhookEventTypes)[number];

/** One event to deliver (Standard Webhooks envelope: `{ type, timestamp, data }`). */
export interface OutboundEvent {
  /**
   * Deterministic from what happened (e.g. `evt_invoice_finalized_<invoice id>`), so raising the
   * same event twice (a retried close, a redelivered Stripe webhook) is delivered once: it is the
   * `webhook-id` receivers deduplicate on. Only `[A-Za-z0-9_:-]`: Standard Webhooks forbids `.`
   * in ids (the signed string is `id.timestamp.body`), so write `evt_invoice_finalized_<id>`.
   */
  readonly id: string;
  readonly type: WebhookEventType;
  readonly data: Record<string, unknown>;
}

/** Raises events; resolves once the event is durable in the outbox (JetStream). */
export interface WebhookEmitter {
  emit(event: OutboundEvent): Promise<void>;
}
