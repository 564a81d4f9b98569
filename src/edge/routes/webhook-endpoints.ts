import type { Hono } from "hono";
import type { JetStreamClient } from "nats";
import { ApiError } from "../../lib/errors.js";
import {
  endpointInputSchema,
  requestReplay,
  viewOf,
  type DeliveryRecord,
  type Webhooks,
} from "../../webhooks/index.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import type { EdgeEnv } from "../context.js";
import { parseWith } from "../params.js";

/** What the webhook routes need: the opened webhooks and a JetStream client for replays. */
export interface EdgeWebhooks extends Webhooks {
  js: JetStreamClient;
}

/** A delivery as the log shows it: everything but the stored payload bytes, plus its size. */
function deliveryView(d: DeliveryRecord) {
  const { payload, ...rest } = d;
  return { ...rest, payload_bytes: Buffer.byteLength(payload) };
}

async function jsonBody(c: { req: { json(): Promise<unknown> } }): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new ApiError("invalid_request", "body is not valid JSON", [
      { field: "body", code: "invalid_json", message: "must be a JSON object" },
    ]);
  }
}

/**
 * Outbound webhook endpoints (`/v1/webhook-endpoints`, admin scope). The `whsec_` secret is in
 * the answer of a create and of a rotation only, never in a listing, and never logged.
 */
export function mountWebhookEndpointRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const hooks = deps.webhooks;
  if (hooks === undefined) return;
  const { keys, log } = deps;
  const now = deps.now ?? Date.now;
  const admin = requireScope(keys, "admin");
  const schema = endpointInputSchema(deps.config.webhooks.allowHttp);
  const found = async (id: string) => {
    const e = await hooks.endpoints.get(id);
    if (e === null) throw new ApiError("not_found", "no webhook endpoint with this id");
    return e;
  };

  app.post("/v1/webhook-endpoints", admin, async (c) => {
    const input = parseWith(schema, await jsonBody(c));
    const e = await hooks.endpoints.create(input, now());
    // The URL's query may carry a receiver's token: only its origin is logged.
    log.info(
      { endpoint: e.id, origin: new URL(e.url).origin, event_types: e.event_types },
      "webhook endpoint created",
    );
    return c.json({ ...viewOf(e), secret: e.secrets[0]!.secret }, 201);
  });
  app.get("/v1/webhook-endpoints", admin, async (c) =>
    c.json({ data: (await hooks.endpoints.list()).map(viewOf) }),
  );
  app.get("/v1/webhook-endpoints/:id", admin, async (c) => c.json(viewOf(await found(c.req.param("id")))));
  app.delete("/v1/webhook-endpoints/:id", admin, async (c) => {
    if (!(await hooks.endpoints.delete(c.req.param("id"))))
      throw new ApiError("not_found", "no webhook endpoint with this id");
    log.info({ endpoint: c.req.param("id") }, "webhook endpoint deleted");
    return c.body(null, 204);
  });
  app.post("/v1/webhook-endpoints/:id/rotate-secret", admin, async (c) => {
    await found(c.req.param("id"));
    const overlapMs = deps.config.webhooks.secretOverlapMs;
    const e = await hooks.endpoints.rotate(c.req.param("id"), overlapMs, now());
    if (e === null) throw new ApiError("not_found", "no webhook endpoint with this id");
    log.info({ endpoint: e.id, overlap_ms: overlapMs }, "webhook endpoint secret rotated");
    return c.json({
      ...viewOf(e),
      secret: e.secrets[0]!.secret,
      previous_secret_expires_at: new Date(now() + overlapMs).toISOString(),
    });
  });
  app.get("/v1/webhook-endpoints/:id/deliveries", admin, async (c) => {
    const e = await found(c.req.param("id"));
    return c.json({ data: (await hooks.deliveries.list(e.id)).map(deliveryView) });
  });
  app.get("/v1/webhook-endpoints/:id/deliveries/:deliveryId", admin, async (c) => {
    const d = await hooks.deliveries.get(c.req.param("id"), c.req.param("deliveryId"));
    if (d === null) throw new ApiError("not_found", "no such delivery of this endpoint");
    return c.json(deliveryView(d));
  });
  app.post("/v1/webhook-endpoints/:id/deliveries/:deliveryId/replay", admin, async (c) => {
    const e = await found(c.req.param("id"));
    if (e.status !== "enabled") {
      throw new ApiError("invalid_request", "the endpoint is disabled", [
        { field: "id", code: "endpoint_disabled", message: e.disabled_reason ?? "disabled" },
      ]);
    }
    const d = await hooks.deliveries.get(e.id, c.req.param("deliveryId"));
    if (d === null) throw new ApiError("not_found", "no such delivery of this endpoint");
    await requestReplay(hooks.js, hooks.names, d);
    log.info({ endpoint: e.id, delivery: d.id }, "webhook delivery replay requested");
    return c.json({ replayed: true, delivery: deliveryView(d) }, 202);
  });
}
