import type { JetStreamClient, JetStreamManager } from "nats";
import { busNames, type BusNames } from "../bus/index.js";
import type { Config } from "../config/index.js";
import type { Logger } from "../observability/index.js";
import { DeliveryLog } from "./deliveries.js";
import { WebhookDispatcher } from "./dispatcher.js";
import { EndpointStore } from "./endpoints.js";
import { ensureWebhookStream, OutboxEmitter } from "./outbox.js";

/** The webhook parts a process uses: the outbox emitter, the endpoint store and the delivery log. */
export interface Webhooks {
  names: BusNames;
  emitter: OutboxEmitter;
  endpoints: EndpointStore;
  deliveries: DeliveryLog;
}

/** Creates (or updates) the webhook stream, consumers and buckets, and opens them. */
export async function openWebhooks(
  js: JetStreamClient,
  jsm: JetStreamManager,
  config: Config,
): Promise<Webhooks> {
  const names = busNames(config.nats.prefix);
  await ensureWebhookStream(jsm, config, names);
  return {
    names,
    emitter: new OutboxEmitter(js, names),
    endpoints: await EndpointStore.open(js, names.webhookEndpointsBucket, config.nats.replicas),
    deliveries: await DeliveryLog.open(js, names.webhookDeliveriesBucket, config.nats.replicas),
  };
}

/** Starts a dispatcher on opened webhooks (follows the endpoints first). */
export async function startDispatcher(
  js: JetStreamClient,
  hooks: Webhooks,
  config: Config,
  log: Logger,
): Promise<WebhookDispatcher> {
  await hooks.endpoints.follow(log);
  const d = new WebhookDispatcher({
    js,
    names: hooks.names,
    endpoints: hooks.endpoints,
    deliveries: hooks.deliveries,
    config: config.webhooks,
    log,
  });
  await d.start();
  return d;
}
