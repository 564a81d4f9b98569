import { Hono } from "hono";
import { requestId } from "hono/request-id";
import { z } from "zod";
import type { KeyStore, PortalTokens } from "../auth/index.js";
import type { CatalogStore } from "../catalog/index.js";
import type { UsageDeps } from "../usage/index.js";
import type { UsageStreams } from "../usage/stream.js";
import { scopes } from "../auth/index.js";
import type { GroupCommitPublisher, Watermarks } from "../bus/index.js";
import type { ClickHouseClient } from "../clickhouse/index.js";
import { queryRows, sql } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { bodyFormat, decodeContent, decodeEvents, validateEvents } from "../events/index.js";
import { ApiError } from "../lib/errors.js";
import { registry, type Logger } from "../observability/index.js";
import { requireScope } from "./auth.js";
import { mountCompatRoutes } from "./compat/index.js";
import { mountPortal } from "./portal.js";
import { mountUsageRoutes } from "./usage-routes.js";
import type { EdgeEnv } from "./context.js";
import { readBodyLimited } from "./body.js";
import { onError } from "./errors.js";
import { parseWith, timeParam } from "./params.js";
import { countRejected, countAccepted } from "./metrics.js";

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
  /** Readiness probe of NATS, ClickHouse and the schema. */
  ready: () => Promise<Record<string, boolean>>;
  now?: () => number;
}

/** Most field errors listed in one 400 (the total is always given). */
const maxListedErrors = 1000;

const filterQuery = z.object({
  customer: z.string().min(1).max(256).optional(),
  type: z.string().min(1).max(128).optional(),
  from: timeParam.optional(),
  to: timeParam.optional(),
});

const listQuery = filterQuery.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(2000).optional(),
});

const cursorSchema = z.object({ ts: z.number().int(), id: z.string() });

/** The HTTP API (ingest, event debugger, keys, health). Pure wiring: no listening here. */
export function createEdgeApp(deps: EdgeDeps): Hono<EdgeEnv> {
  const { config, log, publisher, keys, clickhouse, watermarks } = deps;
  const now = deps.now ?? Date.now;
  const db = config.clickhouse.database;
  const app = new Hono<EdgeEnv>();

  app.use(requestId());
  app.onError(onError(log));
  app.notFound(() => {
    throw new ApiError("not_found", "no such route");
  });

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const checks = await deps.ready();
    const ok = Object.values(checks).every(Boolean);
    return c.json({ status: ok ? "ready" : "not_ready", checks }, ok ? 200 : 503);
  });
  app.get("/metrics", async (c) =>
    c.text(await registry.metrics(), 200, { "content-type": registry.contentType }),
  );

  app.post("/v1/events", requireScope(keys, "ingest"), async (c) => {
    const format = bodyFormat(c.req.header("content-type"));
    const raw = await readBodyLimited(c, config.limits.maxBodyBytes);
    const body = decodeContent(raw, c.req.header("content-encoding"), config.limits.maxBodyBytes);
    let events: unknown[];
    try {
      events = decodeEvents(body, format);
    } catch (err: unknown) {
      countRejected("malformed_body", 1);
      throw err;
    }
    if (events.length > config.limits.maxEventsPerRequest) {
      countRejected("too_many_events", events.length);
      throw new ApiError(
        "payload_too_large",
        `at most ${config.limits.maxEventsPerRequest} events per request (got ${events.length})`,
      );
    }
    if (events.length === 0) throw new ApiError("invalid_request", "no events in the body");
    const batch = validateEvents(events, { nowMs: now(), backfillDays: config.limits.backfillDays });
    if (batch.errors.length > 0) {
      for (const e of batch.errors) countRejected(e.code, 1);
      const invalid = new Set(batch.errors.map((e) => e.index)).size;
      throw new ApiError(
        "invalid_events",
        `${invalid} of ${events.length} events are invalid; nothing was accepted`,
        {
          invalid,
          errors: batch.errors.slice(0, maxListedErrors),
          truncated: batch.errors.length > maxListedErrors,
        },
      );
    }
    await publisher.publish(batch.events);
    countAccepted(batch.events.length);
    return c.json({ accepted: batch.events.length, duplicates: batch.duplicates }, 202);
  });

  app.get("/v1/events", requireScope(keys, "read"), async (c) => {
    const q = parseWith(listQuery, c.req.query());
    let after: { ts: number; id: string } | undefined;
    if (q.cursor !== undefined) {
      try {
        after = cursorSchema.parse(JSON.parse(Buffer.from(q.cursor, "base64url").toString("utf8")));
      } catch {
        throw new ApiError("invalid_request", "cursor: not a cursor returned by this API", [
          { field: "cursor", code: "invalid", message: "not a cursor returned by this API" },
        ]);
      }
    }
    const { watermarkMs: watermark, deadLetterPendingEvents } = await watermarks.status();
    const rows = await queryRows<EventRow>(
      clickhouse,
      sql.listEvents(db, { customer: q.customer, type: q.type, fromMs: q.from, toMs: q.to }, q.limit, after),
    );
    const last = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return c.json({
      data: rows.map(toApiEvent),
      next_cursor: last
        ? Buffer.from(JSON.stringify({ ts: Number(last.ts_ms), id: last.id })).toString("base64url")
        : null,
      watermark: new Date(watermark).toISOString(),
      dead_letter_pending: deadLetterPendingEvents,
    });
  });

  app.get("/v1/events/count", requireScope(keys, "read"), async (c) => {
    const q = parseWith(filterQuery, c.req.query());
    const { watermarkMs: watermark, deadLetterPendingEvents } = await watermarks.status();
    const rows = await queryRows<{ count: string }>(
      clickhouse,
      sql.countEvents(db, { customer: q.customer, type: q.type, fromMs: q.from, toMs: q.to }),
    );
    return c.json({
      count: Number(rows[0]?.count ?? 0),
      watermark: new Date(watermark).toISOString(),
      dead_letter_pending: deadLetterPendingEvents,
    });
  });

  const createKey = z.object({
    name: z.string().min(1).max(128),
    scopes: z.array(z.enum(scopes)).min(1),
  });
  app.post("/v1/keys", requireScope(keys, "admin"), async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      throw new ApiError("invalid_request", "body is not valid JSON");
    }
    const input = parseWith(createKey, body);
    const { key, record } = await keys.create(input.name, input.scopes);
    log.info({ keyId: record.id, scopes: record.scopes }, "api key created");
    return c.json({ key, ...record }, 201);
  });
  app.get("/v1/keys", requireScope(keys, "admin"), (c) => c.json({ data: keys.list() }));
  app.delete("/v1/keys/:id", requireScope(keys, "admin"), async (c) => {
    if (!(await keys.revoke(c.req.param("id")))) throw new ApiError("not_found", "no key with this id");
    return c.body(null, 204);
  });

  mountCompatRoutes(app, deps);
  mountUsageRoutes(app, deps);
  mountPortal(app, deps);
  return app;
}

interface EventRow {
  id: string;
  type: string;
  customer: string;
  ts_ms: string;
  received_ms: string;
  source: string;
  prop_keys: string[];
  prop_values: string[];
}

function toApiEvent(r: EventRow) {
  const properties: Record<string, string> = {};
  r.prop_keys.forEach((k, i) => (properties[k] = r.prop_values[i] ?? ""));
  return {
    id: r.id,
    type: r.type,
    customer: r.customer,
    time: new Date(Number(r.ts_ms)).toISOString(),
    received_at: new Date(Number(r.received_ms)).toISOString(),
    source: r.source === "" ? null : r.source,
    properties,
  };
}
