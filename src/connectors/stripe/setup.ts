import type { WebhookEmitter } from "../../webhooks/emitter.js";
import type { JetStreamClient } from "nats";
import type { InvoiceStore } from "../../billing/index.js";
import type { CatalogStore } from "../../catalog/index.js";
import type { Config } from "../../config/index.js";
import type { Logger } from "../../observability/index.js";
import { createStripeClient } from "./client.js";
import { StripePusher } from "./push.js";
import { PushStore } from "./push-store.js";
import { busNames } from "../../bus/index.js";

/**
 * The pusher as a process runs it (close role, `tally push stripe`): the push store in
 * `<prefix>_push`, the SDK client with the limiter, and the crash-test fault point
 * (TALLY_FAULT_STRIPE_CRASH_AT; off in production). Null when no secret key is configured.
 */
export async function openStripePusher(deps: {
  js: JetStreamClient;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  config: Config;
  log: Logger;
  /** Raises invoice.pushed / invoice.push_failed. */
  webhooks?: WebhookEmitter;
}): Promise<StripePusher | null> {
  const { config } = deps;
  if (config.stripe.secretKey === undefined) return null;
  const store = await PushStore.open(deps.js, busNames(config.nats.prefix).pushBucket, config.nats.replicas);
  const crashAt = config.stripe.crashAt;
  return new StripePusher({
    invoices: deps.invoices,
    catalog: deps.catalog,
    store,
    client: createStripeClient(config.stripe),
    config: config.stripe,
    log: deps.log.child({ connector: "stripe" }),
    ...(deps.webhooks !== undefined ? { webhooks: deps.webhooks } : {}),
    ...(crashAt !== undefined
      ? { crashPoint: (p: string) => p === crashAt && process.kill(process.pid, "SIGKILL") }
      : {}),
  });
}
