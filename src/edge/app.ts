import { Hono } from "hono";
import { requestId } from "hono/request-id";
import type { JournalStore } from "../accounting/index.js";
import type { KeyStore, PortalTokens } from "../auth/index.js";
import type { CatalogStore } from "../catalog/index.js";
import type { UsageDeps } from "../usage/index.js";
import type { UsageStreams } from "../usage/stream.js";
import type { GroupCommitPublisher, Watermarks } from "../bus/index.js";
import type { ClickHouseClient } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { ApiError } from "../lib/errors.js";
import { registry, type Logger } from "../observability/index.js";
import { drainBeforeClose } from "./body.js";
import type { EdgeEnv } from "./context.js";
import { onError } from "./errors.js";
import { mountPortal } from "./portal.js";
import { mountCatalogRoutes } from "./routes/catalog.js";
import { mountEventRoutes } from "./routes/events.js";
import { mountIngestRoutes } from "./routes/ingest.js";
import { mountInvoiceRoutes, type EdgeInvoices } from "./routes/invoices.js";
import { mountKeyRoutes } from "./routes/keys.js";
import { mountRevenueRoutes } from "./routes/revenue.js";
import { mountStripeWebhookRoutes } from "./routes/stripe-webhooks.js";
import { mountWebhookEndpointRoutes, type EdgeWebhooks } from "./routes/webhook-endpoints.js";
import { mountUsageRoutes } from "./usage-routes.js";

/** What the edge needs; built by `startEdge`, or by tests with their own servers. */
export interface EdgeDeps {
  config: Config;
  log: Logger;
  publisher: GroupCommitPublisher;
  keys: KeyStore;
  clickhouse: ClickHouseClient;
  watermarks: Watermarks;
  catalog: CatalogStore;
  /** The one usage query path (usage API, stream, portal). */
  usage: UsageDeps;
  portalTokens: PortalTokens;
  usageStreams: UsageStreams;
  /** Invoices written by the close role (read routes). */
  invoices: EdgeInvoices;
  /** The double-entry journal (revenue and journal read routes); absent: those routes answer 409. */
  journal?: JournalStore;
  /** Readiness probe of NATS, ClickHouse and the schema. */
  ready: () => Promise<Record<string, boolean>>;
  /** Outbound webhooks (endpoints, delivery log, outbox); unset: the routes do not exist. */
  webhooks?: EdgeWebhooks;
  now?: () => number;
  /** The `/metrics` text; default this process's registry (cluster workers: every worker's sum). */
  metrics?: () => Promise<string>;
}

/** The HTTP API. Pure wiring: routes live in `routes/` (and the usage and portal files); no listening here. */
export function createEdgeApp(deps: EdgeDeps): Hono<EdgeEnv> {
  const app = new Hono<EdgeEnv>();

  app.use(requestId());
  app.use(drainBeforeClose());
  app.onError(onError(deps.log));
  app.notFound(() => {
    throw new ApiError("not_found", "no such route");
  });

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const checks = await deps.ready();
    const ok = Object.values(checks).every(Boolean);
    return c.json({ status: ok ? "ready" : "not_ready", checks }, ok ? 200 : 503);
  });
  const metrics = deps.metrics ?? (() => registry.metrics());
  app.get("/metrics", async (c) => c.text(await metrics(), 200, { "content-type": registry.contentType }));

  mountIngestRoutes(app, deps);
  mountEventRoutes(app, deps);
  mountKeyRoutes(app, deps);
  mountCatalogRoutes(app, deps);
  mountInvoiceRoutes(app, deps, deps.invoices);
  mountRevenueRoutes(app, deps);
  mountStripeWebhookRoutes(app, deps);
  mountWebhookEndpointRoutes(app, deps);
  mountUsageRoutes(app, deps);
  mountPortal(app, deps);
  return app;
}
