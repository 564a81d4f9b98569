import type { NatsConnection } from "nats";
import Stripe from "stripe";
import { InvoiceStore } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { CatalogStore } from "../src/catalog/index.js";
import type { Config } from "../src/config/index.js";
import {
  createStripeClient,
  PushStore,
  StripePusher,
  type PushDeps,
} from "../src/connectors/stripe/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { log, testConfig } from "./helpers.js";
import { startStripeServer, type StripeTestServer } from "./stripe-server/index.js";

/** What the Stripe push tests share: the local Stripe server and the stores on a real NATS. */
export interface PushEnv {
  srv: StripeTestServer;
  config: Config;
  nc: NatsConnection;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  store: PushStore;
  /** The real SDK pointed at the local server (for reading back what the push did). */
  sdk: Stripe;
  /** A pusher on these stores, with config overrides. */
  pusher(overrides?: Partial<Config["stripe"]>, extra?: Partial<PushDeps>): StripePusher;
  stop(): Promise<void>;
}

/** Starts the local Stripe server and opens the invoice, catalog and push stores. */
export async function startPushEnv(name: string, key: string): Promise<PushEnv> {
  const srv = await startStripeServer({ port: 0 });
  const config = testConfig({
    TALLY_STRIPE_SECRET_KEY: key,
    TALLY_STRIPE_API_BASE: srv.url,
    TALLY_STRIPE_MAX_RPS: "100",
  });
  const nc = await connectNats(config, name);
  const js = nc.jetstream();
  const names = busNames(config.nats.prefix);
  const invoices = await InvoiceStore.open(js, names.invoicesBucket, 1, log);
  const catalog = await CatalogStore.open(js, names.catalogBucket, 1, log);
  await catalog.start();
  const store = await PushStore.open(js, names.pushBucket, 1);
  const sdk = new Stripe(key, { host: srv.host, port: srv.port, protocol: "http" });
  return {
    srv,
    config,
    nc,
    invoices,
    catalog,
    store,
    sdk,
    pusher(overrides = {}, extra = {}) {
      const stripeConfig = { ...config.stripe, ...overrides };
      return new StripePusher({
        invoices,
        catalog,
        store,
        client: createStripeClient(stripeConfig),
        config: stripeConfig,
        log,
        ...extra,
      });
    },
    async stop() {
      await catalog.close();
      await nc.drain();
      await srv.stop();
    },
  };
}
