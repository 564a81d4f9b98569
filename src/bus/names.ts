/**
 * Names of every NATS object Tally uses, derived from one prefix (`TALLY_NATS_PREFIX`),
 * so several Tally installations (or test runs) can share one NATS server.
 *
 * | object | name (prefix "tally") |
 * |---|---|
 * | events stream | `TALLY_EVENTS`, subjects `tally.events.<partition>` |
 * | dead-letter stream | `TALLY_DLQ`, subjects `tally.dlq.<partition>` |
 * | sink consumers | `tally-sink-p<partition>` (durable, pull, one per partition) |
 * | API keys | KV bucket `tally_keys` |
 * | catalog (meters, versioned) | KV bucket `tally_catalog` |
 * | portal token signing key | KV bucket `tally_secrets` |
 * | bus settings (the partition count, recorded once) | KV bucket `tally_bus` |
 * | sink partition leases and sink heartbeats (TTL) | KV bucket `tally_leases` |
 * | dead-letter resolutions (replayed / discarded) | KV bucket `tally_dead_letters` |
 * | invoices and invoice numbering | KV bucket `tally_invoices` |
 * | the close role's leader lease (TTL) | KV bucket `tally_close` |
 * | invoice pushes to Stripe (progress, payments) | KV bucket `tally_push` |
 * | the double-entry journal (entries and their indexes) | KV bucket `tally_journal` |
 * | journal pushes to Xero (entries, batches, the call limiter) | KV bucket `tally_xero` |
 * | outbound webhook outbox | stream `TALLY_WEBHOOKS`, subjects `tally.webhooks.outbox` (events) and `tally.webhooks.deliveries.<endpoint>` |
 * | webhook consumers | `tally-webhooks-fanout` (events → deliveries), `tally-webhooks-deliver` (HTTP attempts) |
 * | webhook endpoints (secrets), delivery log, fired usage alerts | KV buckets `tally_webhook_endpoints`, `tally_webhook_deliveries` |
 */
export interface BusNames {
  stream: string;
  dlqStream: string;
  subject: (partition: number) => string;
  subjects: string;
  dlqSubject: (partition: number) => string;
  dlqSubjects: string;
  consumer: (partition: number) => string;
  keysBucket: string;
  catalogBucket: string;
  secretsBucket: string;
  busBucket: string;
  leasesBucket: string;
  deadLetterBucket: string;
  invoicesBucket: string;
  pushBucket: string;
  xeroBucket: string;
  closeBucket: string;
  journalBucket: string;
  webhookStream: string;
  webhookOutboxSubject: string;
  webhookDeliverySubject: (endpoint: string) => string;
  webhookDeliverySubjects: string;
  webhookFanoutConsumer: string;
  webhookDeliverConsumer: string;
  webhookEndpointsBucket: string;
  webhookDeliveriesBucket: string;
}

export function busNames(prefix: string): BusNames {
  const upper = prefix.toUpperCase();
  return {
    stream: `${upper}_EVENTS`,
    dlqStream: `${upper}_DLQ`,
    subject: (p) => `${prefix}.events.${p}`,
    subjects: `${prefix}.events.*`,
    dlqSubject: (p) => `${prefix}.dlq.${p}`,
    dlqSubjects: `${prefix}.dlq.*`,
    consumer: (p) => `${prefix}-sink-p${p}`,
    keysBucket: `${prefix}_keys`,
    catalogBucket: `${prefix}_catalog`,
    secretsBucket: `${prefix}_secrets`,
    busBucket: `${prefix}_bus`,
    leasesBucket: `${prefix}_leases`,
    deadLetterBucket: `${prefix}_dead_letters`,
    invoicesBucket: `${prefix}_invoices`,
    pushBucket: `${prefix}_push`,
    xeroBucket: `${prefix}_xero`,
    closeBucket: `${prefix}_close`,
    journalBucket: `${prefix}_journal`,
    webhookStream: `${upper}_WEBHOOKS`,
    webhookOutboxSubject: `${prefix}.webhooks.outbox`,
    webhookDeliverySubject: (endpoint) => `${prefix}.webhooks.deliveries.${endpoint}`,
    webhookDeliverySubjects: `${prefix}.webhooks.deliveries.*`,
    webhookFanoutConsumer: `${prefix}-webhooks-fanout`,
    webhookDeliverConsumer: `${prefix}-webhooks-deliver`,
    webhookEndpointsBucket: `${prefix}_webhook_endpoints`,
    webhookDeliveriesBucket: `${prefix}_webhook_deliveries`,
  };
}
