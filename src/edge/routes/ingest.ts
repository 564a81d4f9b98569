import type { Context, Hono } from "hono";
import { hasScope, type ApiKeyRecord, type KeyStore } from "../../auth/index.js";
import { bodyFormat, decodeEvents } from "../../events/index.js";
import { ApiError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { authenticate, bearerToken } from "../auth.js";
import {
  isCloudEventsContentType,
  isLagoEnvelope,
  lagoAdapter,
  openMeterAdapter,
  parseSessionId,
  reasons,
  renderOpenMeterError,
  renderStripeError,
  StripeSessionExpired,
  stripeStreamAdapter,
  stripeV1Adapter,
} from "../compat/index.js";
import type { EdgeEnv } from "../context.js";
import { renderTallyError, type ErrorRenderer } from "../errors.js";
import { ingestHandler, type IngestAdapter } from "../ingest.js";

/** Tally's own format: JSON (one event or an array), NDJSON or a protobuf `EventBatch`. */
const nativeAdapter: IngestAdapter = {
  render: renderTallyError,
  map({ body, contentType, maxEvents }) {
    return {
      raws: decodeEvents(body, bodyFormat(contentType), { maxEvents }),
      errors: [],
      rename: (field) => field,
      answer: (r) => ({ status: 202, body: { accepted: r.accepted, duplicates: r.duplicates } }),
    };
  },
};

/**
 * `POST /api/v1/events` is OpenMeter's and Lago's. Errors raised before the body is read
 * (401, 403, 413, bad gzip) cannot know which vendor sent the request: CloudEvents content types
 * are OpenMeter's, and plain JSON may be either, so it gets OpenMeter's problem document with
 * Lago's members (`error`, `message`; `status` and `code` are shared) as RFC 7807 extension
 * members: both vendors' clients read their fields from the one body.
 */
const renderApiV1Events: ErrorRenderer = (c, err) =>
  isCloudEventsContentType(c.req.header("content-type"))
    ? renderOpenMeterError(c, err)
    : renderOpenMeterError(c, err, { error: reasons[err.status] ?? "Error", message: err.message });

/**
 * Authenticates a stream request: a live session token (whose parent key still holds `ingest`),
 * or any ingest key. Returns the parent key, whose id derives ids of events without identifier.
 */
function authenticateStream(keys: KeyStore, header: string | undefined, nowMs: number): ApiKeyRecord {
  const rec = keys.verify(bearerToken(header));
  const session = rec === null ? null : parseSessionId(rec.id);
  if (rec === null || session === null) return authenticate(keys, header, "ingest");
  if (session.expiresMs < nowMs) throw new StripeSessionExpired();
  const parent = keys.list().find((r) => r.id === session.parentId);
  if (parent === undefined)
    throw new ApiError("unauthorized", "the key that created this session was revoked");
  if (!hasScope(parent, "ingest")) {
    throw new ApiError("forbidden", "the key that created this session lacks the 'ingest' scope");
  }
  return parent;
}

/**
 * Every ingest route: `POST /v1/events` and the vendors' (docs/compat.md). All take the one
 * path of {@link ingestHandler}; they differ only in authentication and adapter.
 */
export function mountIngestRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const { keys } = deps;
  const now = deps.now ?? Date.now;
  const ingestKey = (c: Context<EdgeEnv>) => authenticate(keys, c.req.header("authorization"), "ingest");

  app.post(
    "/v1/events",
    ingestHandler(deps, {
      render: renderTallyError,
      authenticate: ingestKey,
      checkContentType: (ct) => void bodyFormat(ct),
      adapter: nativeAdapter,
    }),
  );

  // OpenMeter and Lago share this path. CloudEvents content types are OpenMeter; plain JSON is
  // Lago when it is Lago's `{ "event": ... }` envelope, otherwise OpenMeter (CloudEvents).
  app.post(
    "/api/v1/events",
    ingestHandler(deps, {
      render: renderApiV1Events,
      authenticate: ingestKey,
      adapter: (body, contentType) =>
        !isCloudEventsContentType(contentType) && isLagoEnvelope(body)
          ? lagoAdapter(false)
          : openMeterAdapter,
    }),
  );
  const lagoBatch = lagoAdapter(true);
  app.post(
    "/api/v1/events/batch",
    ingestHandler(deps, { render: lagoBatch.render, authenticate: ingestKey, adapter: lagoBatch }),
  );

  app.post(
    "/v1/billing/meter_events",
    ingestHandler(deps, { render: renderStripeError, authenticate: ingestKey, adapter: stripeV1Adapter }),
  );
  app.post(
    "/v2/billing/meter_event_stream",
    ingestHandler(deps, {
      render: renderStripeError,
      authenticate: (c) => authenticateStream(keys, c.req.header("authorization"), now()),
      adapter: stripeStreamAdapter,
    }),
  );
}
