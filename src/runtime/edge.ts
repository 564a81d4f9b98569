import { serve, type ServerType } from "@hono/node-server";
import { Events, type NatsConnection } from "nats";
import { JournalStore } from "../accounting/index.js";
import { KeyStore, PortalTokens } from "../auth/index.js";
import { InvoiceStore } from "../billing/index.js";
import { CatalogStore } from "../catalog/index.js";
import { PushStore } from "../connectors/stripe/index.js";
import { messageSettled } from "../sink/index.js";
import { UsageStreams } from "../usage/stream.js";
import { busNames, DeadLetterLog, ensureStreams, GroupCommitPublisher, Watermarks } from "../bus/index.js";
import {
  createClickHouse,
  createClickHouseReader,
  isSchemaCurrent,
  type ClickHouseClient,
} from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { createEdgeApp } from "../edge/app.js";
import type { Logger } from "../observability/index.js";
import { openWebhooks, type Webhooks } from "../webhooks/index.js";
import { connectNats, warnIfNotHostCrashSafe } from "./connect.js";
import { metricsText } from "./edge-cluster.js";

/** A running edge process. */
export interface RunningEdge {
  port: number;
  nc: NatsConnection;
  keys: KeyStore;
  catalog: CatalogStore;
  invoices: InvoiceStore;
  portalTokens: PortalTokens;
  clickhouse: ClickHouseClient;
  /** Webhook endpoints, delivery log and the outbox emitter (the edge raises `invoice.paid`). */
  webhooks: Webhooks;
  app: ReturnType<typeof createEdgeApp>;
  /** Stops accepting connections, answers what is in flight, closes connections. */
  stop(): Promise<void>;
}

/** Builds every dependency of the edge from config. `listen: false` skips the HTTP server (tests use app.request). */
export async function startEdge(config: Config, log: Logger, listen = true): Promise<RunningEdge> {
  warnIfNotHostCrashSafe(config, log);
  const nc = await connectNats(config, "tally-edge");
  const jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, config);
  const js = nc.jetstream();
  const names = busNames(config.nats.prefix);
  const keys = await KeyStore.open(js, names.keysBucket, config.nats.replicas, log);
  await keys.start();
  if (config.devMode) await keys.put(config.devKey, "dev admin key", ["admin"], "dev");
  const clickhouse = createClickHouse(config.clickhouse);
  // Every read the edge serves (usage API, live streams, portal, event debugger) runs as the
  // read user on its own connections: its ClickHouse profile bounds read load so it cannot
  // starve the sink's inserts and ledger lookups (deploy/clickhouse/users.d/tally.xml).
  const reader = createClickHouseReader(config.clickhouse);
  const publisher = new GroupCommitPublisher(js, names, {
    partitions: config.nats.partitions,
    maxBytes: config.publish.maxBytes,
    maxInflight: config.publish.maxInflight,
    timeoutMs: config.publish.timeoutMs,
    maxPendingBytes: config.publish.maxPendingBytes,
  });
  // NOTE: a publish written to a connection that then dropped never gets its ack, and neither
  // (seen with nats.js 2.29 and a killed nats-server) does one issued while disconnected and
  // flushed on reconnect. Fail both at once (503; the client retries, dedup absorbs a copy that
  // was stored) so their slots are free the moment nats-server is back, instead of after
  // TALLY_PUBLISH_TIMEOUT_MS: 10 s without a 2xx after every NATS restart before this.
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type !== Events.Disconnect && s.type !== Events.Reconnect) continue;
      const failed = publisher.abortInflight(`NATS ${s.type} before the publish was acknowledged`);
      log.warn({ failed, status: s.type }, "NATS connection changed; failed the publishes awaiting an ack");
    }
  })().catch((err: unknown) => log.error({ err }, "NATS status watcher stopped"));
  // Dead-letter resolutions (tally dlq replay/discard) are read by the watermark.
  await DeadLetterLog.open(js, names, config.nats.replicas);
  const watermarks = new Watermarks(jsm, names, config.nats.partitions, 200, log, (data) =>
    messageSettled(clickhouse, config.clickhouse.database, data),
  );
  const catalog = await CatalogStore.open(js, names.catalogBucket, config.nats.replicas, log);
  await catalog.start();
  const invoiceStore = await InvoiceStore.open(js, names.invoicesBucket, config.nats.replicas, log);
  const invoices = {
    store: invoiceStore,
    index: await invoiceStore.index(),
    push: await PushStore.open(js, names.pushBucket, config.nats.replicas),
  };
  const journal = await JournalStore.open(js, names.journalBucket, config.nats.replicas, log);
  const portalTokens = await PortalTokens.open(
    js,
    names.secretsBucket,
    config.nats.replicas,
    config.usage.portalSecret,
  );
  const webhooks = await openWebhooks(js, jsm, config);
  const usage = { clickhouse: reader, database: config.clickhouse.database, watermarks };
  const usageStreams = new UsageStreams(usage, log, config.usage.streamIntervalMs);
  const ready = async () => {
    const [clickhouseOk, schema] = await Promise.all([
      clickhouse.ping().then((r) => r.success),
      isSchemaCurrent(clickhouse, config.clickhouse.database),
    ]);
    let natsOk = !nc.isClosed();
    if (natsOk)
      natsOk = await jsm.streams.info(names.stream).then(
        () => true,
        () => false,
      );
    return { nats: natsOk, clickhouse: clickhouseOk, schema };
  };
  const app = createEdgeApp({
    journal,
    config,
    log,
    publisher,
    keys,
    // The app uses `clickhouse` only for the event debugger's reads: the read user too.
    clickhouse: reader,
    watermarks,
    catalog,
    usage,
    portalTokens,
    usageStreams,
    invoices,
    ready,
    webhooks: { ...webhooks, js },
    metrics: metricsText,
  });
  let server: ServerType | null = null;
  let port = config.http.port;
  if (listen) {
    await new Promise<void>((resolve) => {
      server = serve({ fetch: app.fetch, port: config.http.port, hostname: config.http.host }, (info) => {
        port = info.port;
        resolve();
      });
    });
    // Slowloris and stuck clients: bound how long a request may take to arrive.
    (server as unknown as { requestTimeout: number; headersTimeout: number }).requestTimeout = 30_000;
    (server as unknown as { headersTimeout: number }).headersTimeout = 10_000;
  }
  return {
    port,
    nc,
    keys,
    catalog,
    invoices: invoiceStore,
    portalTokens,
    clickhouse,
    webhooks,
    app,
    async stop() {
      // Live usage streams never end by themselves: end them before waiting for connections.
      usageStreams.close();
      if (server !== null) {
        const s = server;
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
      await publisher.drain();
      await keys.close();
      await catalog.close();
      invoices.index.stop();
      await nc.drain();
      await clickhouse.close();
      await reader.close();
    },
  };
}
