import { randomBytes } from "node:crypto";
import type { Context } from "hono";
import { uuidv7 } from "uuidv7";
import { hasScope } from "../../auth/index.js";
import { decodeEvents } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import type { EdgeEnv } from "../context.js";
import { asObject, authorize, fieldErrors, ingest, readBody, renamer, type MappedBatch } from "./pipeline.js";

/**
 * Stripe meter events: v1 `POST /v1/billing/meter_events` (form encoded) and the v2 stream
 * (`POST /v2/billing/meter_event_session`, then `POST /v2/billing/meter_event_stream` with the
 * session token as bearer).
 *
 * | Stripe                          | Tally                                      |
 * | ------------------------------- | ------------------------------------------ |
 * | identifier                      | id (generated when absent)                 |
 * | payload[stripe_customer_id]     | customer                                   |
 * | event_name                      | type                                       |
 * | timestamp (v1 unix s, v2 RFC 3339) | time                                    |
 * | payload[*] other keys (`value`) | properties                                 |
 * | —                               | source = "stripe"                          |
 */

/** Stripe's error codes where one exists for the condition; Tally's code otherwise. */
function stripeCode(code: string): string {
  switch (code) {
    case "required":
      return "parameter_missing";
    case "unknown":
      return "parameter_unknown";
    default:
      return code;
  }
}

/** `{ error: { type, message, param, code } }`, Stripe's error object (one error, the first). */
export function renderStripeError(c: Context<EdgeEnv>, err: ApiError): Response {
  const first = fieldErrors(err)[0];
  const type = err.status >= 500 ? "api_error" : "invalid_request_error";
  const body = {
    error: {
      type,
      message: first
        ? first.code === "required"
          ? `Missing required param: ${first.field}.`
          : `Invalid ${first.field}: ${first.message}`
        : err.message,
      ...(first ? { param: first.field, code: stripeCode(first.code) } : { code: err.code }),
      request_log_url: null,
      requestId: c.get("requestId"),
    },
  };
  // Stripe answers validation problems with 400; other statuses keep their meaning.
  return c.json(body, err.code === "invalid_events" ? 400 : err.status);
}

const customerKey = "stripe_customer_id";
const source = "stripe";

function payloadProperties(payload: Record<string, unknown>): Record<string, unknown> {
  const { [customerKey]: _customer, ...rest } = payload;
  return rest;
}

function checkValue(
  payload: Record<string, unknown> | null,
  index: number,
  field: string,
  errors: FieldError[],
) {
  const v = payload?.value;
  if (v === undefined || v === null) return;
  const text = typeof v === "number" ? String(v) : v;
  if (typeof text !== "string" || !/^-?\d+(\.\d+)?$/.test(text.trim())) {
    errors.push({ index, field, code: "invalid_format", message: "value must be a number" });
  }
}

// ---------- v1: form-encoded meter events ----------

const v1Rename = renamer(
  {
    id: "identifier",
    customer: `payload[${customerKey}]`,
    type: "event_name",
    time: "timestamp",
    source: "source",
  },
  (key) => (key === null ? "payload" : `payload[${key}]`),
);

interface V1Params {
  event_name?: string;
  identifier?: string;
  timestamp?: string;
  payload: Record<string, string>;
}

/** Stripe's form encoding (`payload[value]=25`); unknown parameters are rejected as Stripe does. */
function parseV1Form(text: string): V1Params {
  const params: V1Params = { payload: {} };
  const errors: FieldError[] = [];
  for (const [key, value] of new URLSearchParams(text)) {
    const nested = /^payload\[([^\]]+)\]$/.exec(key);
    if (nested) params.payload[nested[1]!] = value;
    else if (key === "event_name" || key === "identifier" || key === "timestamp") params[key] = value;
    else if (/^expand\[\d*\]$/.test(key))
      continue; // nothing to expand on a meter event
    else
      errors.push({ index: 0, field: key, code: "unknown", message: `Received unknown parameter: ${key}` });
  }
  if (errors.length > 0) throw new ApiError("invalid_events", errors[0]!.message, errors);
  return params;
}

async function meterEventV1(deps: EdgeDeps, c: Context<EdgeEnv>): Promise<Response> {
  await authorize(deps, c);
  const body = await readBody(deps, c);
  const mime = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (mime !== "application/x-www-form-urlencoded") {
    throw new ApiError(
      "unsupported_media_type",
      "send parameters form encoded (application/x-www-form-urlencoded)",
    );
  }
  const p = parseV1Form(Buffer.from(body).toString("utf8"));
  const errors: FieldError[] = [];
  const now = (deps.now ?? Date.now)();
  let timeMs = now;
  if (p.timestamp !== undefined) {
    if (/^\d{1,12}$/.test(p.timestamp)) timeMs = Number(p.timestamp) * 1000;
    else
      errors.push({
        index: 0,
        field: "timestamp",
        code: "parameter_invalid_integer",
        message: "timestamp must be an integer (Unix seconds)",
      });
  }
  checkValue(p.payload, 0, "payload[value]", errors);
  // Without an identifier, the SDK's Idempotency-Key (stable across its retries) keeps a
  // retried request from counting twice; Stripe itself generates a random one.
  const identifier = p.identifier ?? c.req.header("idempotency-key") ?? uuidv7();
  const batch: MappedBatch = {
    raws: [
      {
        id: identifier,
        customer: p.payload[customerKey],
        type: p.event_name,
        time: timeMs,
        properties: payloadProperties(p.payload),
        source,
      },
    ],
    errors,
  };
  await ingest(deps, batch, v1Rename);
  return c.json({
    object: "billing.meter_event",
    created: Math.floor(now / 1000),
    event_name: p.event_name,
    identifier,
    livemode: false,
    payload: p.payload,
    timestamp: Math.floor(timeMs / 1000),
  });
}

// ---------- v2: meter event sessions and the stream ----------

/** Authentication tokens are valid for 15 minutes, as Stripe's. */
export const sessionTtlMs = 15 * 60 * 1000;
const sessionPrefix = "mes_";

/**
 * A session is an API key record in the shared key store (so every edge accepts it at once,
 * through the KV watch) with NO scopes: it is useless on every other route. Its id carries
 * the expiry and the parent key: `mes_<expiry base36>_<random>_<parent id>`.
 */
function parseSessionId(id: string): { expiresMs: number; parentId: string } | null {
  if (!id.startsWith(sessionPrefix)) return null;
  const m = /^mes_([0-9a-z]+)_([0-9a-f]+)_(.+)$/.exec(id);
  if (m === null) return null;
  return { expiresMs: parseInt(m[1]!, 36), parentId: m[3]! };
}

async function createSession(deps: EdgeDeps, c: Context<EdgeEnv>): Promise<Response> {
  await authorize(deps, c);
  const parent = c.get("apiKey");
  const now = (deps.now ?? Date.now)();
  // Sweep expired sessions (they are already refused; this only keeps the key store small).
  for (const rec of deps.keys.list()) {
    const s = parseSessionId(rec.id);
    if (s !== null && s.expiresMs < now) await deps.keys.revoke(rec.id);
  }
  const expiresMs = now + sessionTtlMs;
  const token = `tally_mes_${randomBytes(24).toString("base64url")}`;
  const id = `${sessionPrefix}${expiresMs.toString(36)}_${randomBytes(6).toString("hex")}_${parent.id}`;
  await deps.keys.put(token, `stripe meter event session of ${parent.id}`, [], id);
  return c.json({
    id,
    object: "v2.billing.meter_event_session",
    authentication_token: token,
    created: new Date(now).toISOString(),
    expires_at: new Date(expiresMs).toISOString(),
    livemode: false,
  });
}

class SessionExpired extends Error {}

/** Accepts a live session token (whose parent key still holds `ingest`) or any ingest key. */
function authorizeStream(deps: EdgeDeps, c: Context<EdgeEnv>): Promise<void> | void {
  const header = c.req.header("authorization") ?? "";
  const token = header.replace(/^bearer\s+/i, "").trim();
  const rec = token === "" ? null : deps.keys.verify(token);
  const session = rec === null ? null : parseSessionId(rec.id);
  if (rec === null || session === null) return authorize(deps, c);
  if (session.expiresMs < (deps.now ?? Date.now)()) throw new SessionExpired();
  const parent = deps.keys.list().find((r) => r.id === session.parentId);
  if (parent === undefined)
    throw new ApiError("unauthorized", "the key that created this session was revoked");
  if (!hasScope(parent, "ingest")) {
    throw new ApiError("forbidden", "the key that created this session lacks the 'ingest' scope");
  }
  c.set("apiKey", parent);
}

function v2Rename(field: string, index: number): string {
  return renamer(
    {
      id: "identifier",
      customer: `payload.${customerKey}`,
      type: "event_name",
      time: "timestamp",
      source: "source",
    },
    (key) => (key === null ? "payload" : `payload.${key}`),
    (i) => `events[${i}].`,
  )(field, index);
}

async function meterEventStream(deps: EdgeDeps, c: Context<EdgeEnv>): Promise<Response> {
  try {
    await authorizeStream(deps, c);
  } catch (err: unknown) {
    if (!(err instanceof SessionExpired)) throw err;
    return c.json(
      {
        error: {
          type: "temporary_session_expired",
          code: "billing_meter_event_session_expired",
          message: "The meter event session has expired; create a new one.",
        },
      },
      401,
    );
  }
  const [parsed] = decodeEvents(await readBody(deps, c), "json");
  const events = asObject(parsed)?.events;
  if (!Array.isArray(events)) throw new ApiError("invalid_request", "body must be { events: [ ... ] }");
  const errors: FieldError[] = [];
  const raws = events.map((ev, index) => {
    const e = asObject(ev);
    if (e === null) {
      errors.push({ index, field: `events[${index}]`, code: "invalid_type", message: "must be an object" });
      return null;
    }
    const payload = asObject(e.payload);
    checkValue(payload, index, `events[${index}].payload.value`, errors);
    return {
      id: e.identifier ?? uuidv7(),
      customer: payload?.[customerKey],
      type: e.event_name,
      time: e.timestamp,
      properties: payload === null ? e.payload : payloadProperties(payload),
      source,
    };
  });
  await ingest(deps, { raws, errors }, v2Rename);
  return c.json({}, 200);
}

export const stripeRoutes = { meterEventV1, createSession, meterEventStream };
