import type { Context, Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { streamSSE, type SSEStreamingApi } from "hono/streaming";
import { z } from "zod";
import { hasScope, maxPortalTokenSeconds, portalTokenPrefix } from "../auth/index.js";
import { CatalogInputError, meterKeyPattern, parseCatalogDocument, validateMeter } from "../catalog/index.js";
import { clickHouseErrorCode } from "../clickhouse/index.js";
import { ApiError } from "../lib/errors.js";
import {
  isValidZone,
  monthContaining,
  queryUsage,
  UsageRequestError,
  windowSizes,
  type UsageRequest,
} from "../usage/index.js";
import { UsageStreamLimitError } from "../usage/stream.js";
import type { EdgeDeps } from "./app.js";
import { requireScope } from "./auth.js";
import { readBodyLimited } from "./body.js";
import type { EdgeEnv } from "./context.js";
import { parseWith, timeParam } from "./params.js";

/** Longest range one usage question may cover. */
const maxRangeDays = 400;

/** Most bytes of a catalog document sent to `POST /v1/catalog`. */
const maxCatalogBytes = 1024 * 1024;

const usageQuery = z.object({
  meter: z.string({ error: "is required" }).regex(meterKeyPattern, "must be a meter key"),
  customer: z.string().min(1).max(256).optional(),
  from: timeParam.optional(),
  to: timeParam.optional(),
  window: z.enum(windowSizes, { error: `must be one of ${windowSizes.join(", ")}` }).optional(),
  tz: z
    .string()
    .max(64)
    .refine(isValidZone, "must be an IANA time zone such as UTC or Europe/Berlin")
    .default("UTC"),
  group_by: z
    .string()
    .max(1000)
    .transform((s) =>
      s
        .split(",")
        .map((g) => g.trim())
        .filter((g) => g !== ""),
    )
    .optional(),
  token: z.string().optional(),
});

function invalid(field: string, message: string): ApiError {
  return new ApiError("invalid_request", `${field}: ${message}`, [{ field, code: "invalid", message }]);
}

/**
 * Usage readers: an API key with the `read` scope (`Authorization: Bearer tally_…`), or a
 * portal token (`Bearer tp1.…`, or `?token=tp1.…` for browsers' EventSource, which cannot set
 * headers). API keys are never accepted in the URL. A portal token pins the customer.
 */
function requireUsageReader(deps: EdgeDeps) {
  return createMiddleware<EdgeEnv>(async (c, next) => {
    const header = c.req.header("authorization");
    const bearer =
      header !== undefined && /^bearer\s+/i.test(header)
        ? header.replace(/^bearer\s+/i, "").trim()
        : undefined;
    const presented = bearer ?? c.req.query("token");
    if (presented === undefined)
      throw new ApiError("unauthorized", "missing Authorization: Bearer <api key or portal token>");
    if (presented.startsWith(portalTokenPrefix)) {
      const grant = deps.portalTokens.verify(presented);
      if (grant === null) throw new ApiError("unauthorized", "invalid or expired portal token");
      c.set("portal", grant);
      return next();
    }
    if (bearer === undefined)
      throw new ApiError("unauthorized", "API keys go in the Authorization header, never in the URL");
    const rec = deps.keys.verify(bearer);
    if (rec === null) throw new ApiError("unauthorized", "unknown or revoked API key");
    if (!hasScope(rec, "read")) {
      throw new ApiError("forbidden", "this API key lacks the 'read' scope", {
        required: "read",
        granted: rec.scopes,
      });
    }
    c.set("apiKey", rec);
    return next();
  });
}

/**
 * Turns query parameters into a usage request, enforcing the caller's reach: a portal token
 * sees its own customer and nothing else, whatever `customer` says.
 */
export function usageRequestFrom(c: Context<EdgeEnv>, deps: EdgeDeps, nowMs: number): UsageRequest {
  const q = parseWith(usageQuery, c.req.query());
  const portal = c.get("portal");
  let customer = q.customer;
  if (portal !== undefined) {
    if (customer !== undefined && customer !== portal.customer) {
      throw new ApiError("forbidden", "this portal token only reads its own customer's usage", [
        { field: "customer", code: "forbidden", message: "not the customer of this portal token" },
      ]);
    }
    customer = portal.customer;
  }
  const meter = deps.catalog.get(q.meter);
  if (meter === undefined) {
    throw new ApiError("not_found", `meter: no meter with key ${JSON.stringify(q.meter)}`, [
      { field: "meter", code: "unknown", message: "no such meter; see GET /v1/meters" },
    ]);
  }
  const month = monthContaining(nowMs, q.tz);
  const fromMs = q.from ?? month.fromMs;
  const toMs = q.to ?? (q.from === undefined ? month.toMs : nowMs);
  if (toMs <= fromMs) throw invalid("to", "must be after from");
  if (toMs - fromMs > maxRangeDays * 86_400_000)
    throw invalid("to", `the range may cover at most ${maxRangeDays} days`);
  return { meter, customer, fromMs, toMs, window: q.window, tz: q.tz, groupBy: q.group_by };
}

function asApiError(err: unknown): unknown {
  if (err instanceof UsageRequestError) return invalid(err.field, err.message);
  // The read user's profile refused the query (see deploy/clickhouse/): too many concurrent
  // reads (202) or one read ran too long (159). The sink is unaffected; the reader retries.
  switch (clickHouseErrorCode(err)) {
    case "202":
      return new ApiError("unavailable", "too many usage queries at once; retry shortly", undefined, 1);
    case "159":
      return new ApiError(
        "unavailable",
        "the usage query ran too long; use a shorter range, a larger window or fewer dimensions",
        undefined,
        5,
      );
    default:
      return err;
  }
}

/**
 * Serves a live stream (Server-Sent Events) to the caller of a usage route: claims one of the
 * caller's streams first (an API key or a portal token may hold only so many: 429 beyond,
 * `TALLY_USAGE_STREAMS_PER_KEY` / `_PER_TOKEN`; 503 when the edge is full), then lets
 * `follow` subscribe and write. The stream ends when the client leaves, the edge shuts down
 * (`follow` calls `end`) or a portal token expires; then `follow`'s unsubscribe runs and the
 * claim is released.
 */
export function serveLiveStream(
  c: Context<EdgeEnv>,
  deps: EdgeDeps,
  follow: (stream: SSEStreamingApi, end: () => void) => () => void,
): Response {
  const portal = c.get("portal");
  const owner = portal === undefined ? `key:${c.get("apiKey").id}` : `portal:${portal.tokenId}`;
  const limit = portal === undefined ? deps.config.usage.streamsPerKey : deps.config.usage.streamsPerToken;
  let release: () => void;
  try {
    release = deps.usageStreams.acquire(owner, limit);
  } catch (err: unknown) {
    if (!(err instanceof UsageStreamLimitError)) throw err;
    if (err.scope === "process") throw new ApiError("unavailable", err.message, undefined, 5);
    const field = portal === undefined ? "authorization" : "token";
    throw new ApiError(
      "rate_limited",
      `${err.message}; close one before opening another`,
      { errors: [{ field, code: "too_many_streams", message: err.message }], limit: err.limit },
      5,
    );
  }
  c.header("Cache-Control", "no-store");
  c.header("X-Accel-Buffering", "no");
  return streamSSE(c, async (stream) => {
    let end!: () => void;
    const done = new Promise<void>((resolve) => (end = resolve));
    stream.onAbort(end);
    let unsubscribe = () => {};
    // A token that expires ends its stream.
    const expiry =
      portal === undefined
        ? null
        : setTimeout(() => void stream.close(), Math.max(0, portal.expiresAt - Date.now()));
    try {
      unsubscribe = follow(stream, end);
      await done;
    } finally {
      unsubscribe();
      release();
      if (expiry !== null) clearTimeout(expiry);
    }
  });
}

/** Meters (catalog), usage API, live usage stream, and portal token issuing. */
export function mountUsageRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const now = deps.now ?? Date.now;

  // --- catalog: meters ---------------------------------------------------------------------------
  app.get("/v1/meters", requireScope(deps.keys, "read"), (c) => c.json({ data: deps.catalog.list() }));
  app.get("/v1/meters/:key", requireScope(deps.keys, "read"), (c) => {
    const m = deps.catalog.get(c.req.param("key"));
    if (m === undefined) throw new ApiError("not_found", "no meter with this key");
    return c.json(m);
  });
  app.get("/v1/meters/:key/versions", requireScope(deps.keys, "read"), async (c) => {
    const versions = await deps.catalog.history(c.req.param("key"));
    if (versions.length === 0) throw new ApiError("not_found", "no meter with this key");
    return c.json({ data: versions });
  });
  app.put("/v1/meters/:key", requireScope(deps.keys, "admin"), async (c) => {
    const body = await readJson(c);
    if (
      body !== null &&
      typeof body === "object" &&
      !Array.isArray(body) &&
      "key" in body &&
      body.key !== c.req.param("key")
    ) {
      throw invalid("key", "must match the key in the URL");
    }
    const def = catalogCall(() => validateMeter({ ...(body as object), key: c.req.param("key") }));
    const [result] = await deps.catalog.apply([def]);
    return c.json({ ...result, meter: deps.catalog.get(def.key) }, result?.outcome === "created" ? 201 : 200);
  });
  /** Applies the `meters:` of a catalog document (YAML or JSON body), as `tally catalog apply` does. */
  app.post("/v1/catalog", requireScope(deps.keys, "admin"), async (c) => {
    const text = Buffer.from(await readBodyLimited(c, maxCatalogBytes)).toString("utf8");
    // The whole document (meters, plans, customers, subscriptions), as `tally catalog apply`.
    const doc = catalogCall(() => parseCatalogDocument(text, deps.catalog.lookup()));
    const applied = await deps.catalog.applyDocument(doc);
    return c.json({
      data: applied.meters,
      plans: applied.plans,
      customers: applied.customers,
      subscriptions: applied.subscriptions,
      accounts: applied.accounts,
    });
  });

  // --- usage ---------------------------------------------------------------------------------------
  app.get("/v1/usage", requireUsageReader(deps), async (c) => {
    const req = usageRequestFrom(c, deps, now());
    try {
      // status() first: queryUsage's own watermark read then hits the same cached computation.
      const { deadLetterPendingEvents } = await deps.watermarks.status();
      return c.json({ ...(await queryUsage(deps.usage, req)), dead_letter_pending: deadLetterPendingEvents });
    } catch (err: unknown) {
      throw asApiError(err);
    }
  });

  app.get("/v1/usage/stream", requireUsageReader(deps), (c) => {
    const req = usageRequestFrom(c, deps, now());
    return serveLiveStream(c, deps, (stream, end) => {
      let lastData = "";
      let lastSentAt = 0;
      let seq = 0;
      return deps.usageStreams.subscribe(req, (u) => {
        if (u.kind === "closed") return end();
        if (u.kind === "error") {
          void stream.writeSSE({
            event: "error",
            data: JSON.stringify({ message: "usage temporarily unavailable; retrying" }),
          });
          return;
        }
        const data = u.dataJson;
        const t = Date.now();
        // Changed numbers go out at once; otherwise a fresher watermark every few seconds.
        if (data !== lastData) {
          lastData = data;
          lastSentAt = t;
          void stream.writeSSE({ event: "usage", id: String(++seq), data: u.json });
        } else if (t - lastSentAt >= 5000) {
          lastSentAt = t;
          void stream.writeSSE({
            event: "watermark",
            data: JSON.stringify({ watermark: u.result.watermark }),
          });
        }
      });
    });
  });

  // --- portal tokens -------------------------------------------------------------------------------
  const tokenBody = z.strictObject({
    customer: z.string().min(1).max(256),
    expires_in: z.number().int().min(60).max(maxPortalTokenSeconds).default(3600),
  });
  app.post("/v1/portal/tokens", requireScope(deps.keys, "admin"), async (c) => {
    const body = parseWith(tokenBody, await readJson(c));
    const { token, expiresAt } = deps.portalTokens.issue(body.customer, body.expires_in);
    deps.log.info({ customer: body.customer, expiresAt, keyId: c.get("apiKey").id }, "portal token issued");
    return c.json(
      {
        token,
        customer: body.customer,
        expires_at: new Date(expiresAt).toISOString(),
        url: `/portal?token=${encodeURIComponent(token)}`,
      },
      201,
    );
  });
}

async function readJson(c: Context<EdgeEnv>): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw new ApiError("invalid_request", "body is not valid JSON");
  }
}

function catalogCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err: unknown) {
    if (err instanceof CatalogInputError) {
      throw new ApiError(
        "invalid_request",
        err.message,
        err.issues.map((i) => ({ field: i.path, code: "invalid", message: i.message })),
      );
    }
    throw err;
  }
}
