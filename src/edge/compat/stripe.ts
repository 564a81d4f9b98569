import { createHash, randomBytes } from "node:crypto";
import { uuidv7 } from "uuidv7";
import { decodeEvents } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import { fieldErrorsOf, type ErrorRenderer } from "../errors.js";
import type { IngestAdapter, MappedRequest } from "../ingest.js";
import { asObject, renamer, withoutKey } from "./mapping.js";

/**
 * Stripe meter events: v1 `POST /v1/billing/meter_events` (form encoded) and the v2 stream
 * (`POST /v2/billing/meter_event_session`, then `POST /v2/billing/meter_event_stream` with the
 * session token as bearer).
 *
 * | Stripe                             | Tally                                                |
 * | ---------------------------------- | ---------------------------------------------------- |
 * | identifier                         | id (when absent: v1 {@link v1EventId}, v2 {@link v2EventId}) |
 * | payload[stripe_customer_id]        | customer                                             |
 * | event_name                         | type                                                 |
 * | timestamp (v1 unix s, v2 RFC 3339) | time                                                 |
 * | payload[*] other keys (`value`)    | properties                                           |
 * | —                                  | source = "stripe"                                    |
 */

/** A Stripe v2 session token past its expiry: answered with Stripe's own 401 shape. */
export class StripeSessionExpired extends ApiError {
  constructor() {
    super("unauthorized", "The meter event session has expired; create a new one.");
  }
}

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
export const renderStripeError: ErrorRenderer = (c, err) => {
  if (err instanceof StripeSessionExpired) {
    return c.json(
      {
        error: {
          type: "temporary_session_expired",
          code: "billing_meter_event_session_expired",
          message: err.message,
        },
      },
      401,
    );
  }
  const first = fieldErrorsOf(err)[0];
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
};

const customerKey = "stripe_customer_id";
const source = "stripe";

/**
 * `value` is required, as Stripe requires the meter's value key in the payload (API reference,
 * `payload`: "This must contain the fields corresponding to a meter's
 * `customer_mapping.event_payload_key` ... and `value_settings.event_payload_key` (default is
 * `value`)"), and must be a decimal number. Stripe checks v2 stream events asynchronously;
 * Tally checks both synchronously (docs/compat.md).
 */
function checkValue(
  payload: Record<string, unknown> | null,
  index: number,
  field: string,
  errors: FieldError[],
) {
  const v = payload === null || !Object.hasOwn(payload, "value") ? undefined : payload.value;
  if (v === undefined || v === null) {
    errors.push({ index, field, code: "required", message: `${field} is required` });
    return;
  }
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
  /** Without prototype: `payload[__proto__]` is a key like any other (then refused by validation). */
  payload: Record<string, string>;
}

/** Stripe's form encoding (`payload[value]=25`); unknown parameters are reported as Stripe does. */
function parseV1Form(text: string, errors: FieldError[]): V1Params {
  const params: V1Params = { payload: Object.create(null) as Record<string, string> };
  for (const [key, value] of new URLSearchParams(text)) {
    const nested = /^payload\[([^\]]+)\]$/.exec(key);
    if (nested) params.payload[nested[1]!] = value;
    else if (key === "event_name" || key === "identifier" || key === "timestamp") params[key] = value;
    else if (/^expand\[\d*\]$/.test(key))
      continue; // nothing to expand on a meter event
    else
      errors.push({ index: 0, field: key, code: "unknown", message: `Received unknown parameter: ${key}` });
  }
  return params;
}

/**
 * The id of a v1 meter event without `identifier`: the request's `Idempotency-Key` (the Stripe
 * SDK sends one with every POST and keeps it across its retries), else a fresh UUIDv7, as
 * Stripe generates one: "A unique identifier for the event. If not provided, one is generated.
 * ... We will enforce uniqueness within a rolling period of at least 24 hours."
 * (https://docs.stripe.com/api/billing/meter-event/create, `identifier`).
 */
export function v1EventId(identifier: string | undefined, idempotencyKey: string | undefined): string {
  return identifier ?? idempotencyKey ?? uuidv7();
}

/** v1 meter events: one form-encoded event → 200 with Stripe's `billing.meter_event`. */
export const stripeV1Adapter: IngestAdapter = {
  render: renderStripeError,
  map({ body, contentType, idempotencyKey, nowMs }): MappedRequest {
    const mime = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
    if (mime !== "application/x-www-form-urlencoded") {
      throw new ApiError(
        "unsupported_media_type",
        "send parameters form encoded (application/x-www-form-urlencoded)",
      );
    }
    const errors: FieldError[] = [];
    const p = parseV1Form(Buffer.from(body).toString("utf8"), errors);
    let timeMs = nowMs;
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
    const identifier = v1EventId(p.identifier, idempotencyKey);
    return {
      raws: [
        {
          id: identifier,
          customer: p.payload[customerKey],
          type: p.event_name,
          time: timeMs,
          properties: withoutKey(p.payload, customerKey),
          source,
        },
      ],
      errors,
      rename: v1Rename,
      answer: () => ({
        status: 200,
        body: {
          object: "billing.meter_event",
          created: Math.floor(nowMs / 1000),
          event_name: p.event_name,
          identifier,
          livemode: false,
          payload: p.payload,
          timestamp: Math.floor(timeMs / 1000),
        },
      }),
    };
  },
};

// ---------- v2: meter event sessions and the stream ----------

/** Authentication tokens are valid for 15 minutes, as Stripe's. */
export const sessionTtlMs = 15 * 60 * 1000;
const sessionPrefix = "mes_";

/**
 * A session is an API key record in the shared key store (so every edge accepts it at once,
 * through the KV watch) with NO scopes: it is useless on every other route. Its id carries
 * the expiry and the parent key: `mes_<expiry base36>_<random>_<parent id>`.
 */
export function parseSessionId(id: string): { expiresMs: number; parentId: string } | null {
  if (!id.startsWith(sessionPrefix)) return null;
  const m = /^mes_([0-9a-z]+)_([0-9a-f]+)_(.+)$/.exec(id);
  if (m === null) return null;
  return { expiresMs: parseInt(m[1]!, 36), parentId: m[3]! };
}

/** A new session of `parentId`: its bearer token and its key id. */
export function newSession(
  parentId: string,
  nowMs: number,
): { token: string; id: string; expiresMs: number } {
  const expiresMs = nowMs + sessionTtlMs;
  return {
    token: `tally_mes_${randomBytes(24).toString("base64url")}`,
    id: `${sessionPrefix}${expiresMs.toString(36)}_${randomBytes(6).toString("hex")}_${parentId}`,
    expiresMs,
  };
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

/**
 * The id of a v2 stream event without `identifier`. Stripe generates a fresh one: "A unique
 * identifier for the event. If not provided, one will be generated. ... We'll enforce uniqueness
 * within a rolling 24 hour period." (https://docs.stripe.com/api/v2/billing/meter-event-stream/create,
 * `events.identifier`; events are "processed asynchronously, including validation"), so at
 * Stripe a retried request without identifiers counts twice unless its Idempotency-Key is
 * replayed. Tally derives the id from what a retry repeats, so a retry counts once:
 *
 *   `stripe-v2-` + hex SHA-256 of (`<parent key id>` NUL `<Idempotency-Key or "">` NUL `<body>`)
 *   + `-` + the event's index in `events`
 *
 * `<parent key id>` is the id of the API key that created the session (or the ingest key used
 * directly) and `<body>` the request body bytes after Content-Encoding was undone. The Stripe
 * SDK sends a new Idempotency-Key per call and keeps it across its retries, so two calls with
 * identical events still count twice, as at Stripe; a client sending no Idempotency-Key has
 * identical bodies counted once (give such events an `identifier` or a `timestamp`).
 */
export function v2EventId(
  parentKeyId: string,
  idempotencyKey: string | undefined,
  body: Uint8Array,
  index: number,
): string {
  const h = createHash("sha256")
    .update(parentKeyId)
    .update("\0")
    .update(idempotencyKey ?? "")
    .update("\0")
    .update(body)
    .digest("hex");
  return `stripe-v2-${h}-${index}`;
}

/** The v2 stream: `{ events: [...] }` → `200 {}`. */
export const stripeStreamAdapter: IngestAdapter = {
  render: renderStripeError,
  map({ body, apiKey, idempotencyKey, maxEvents }): MappedRequest {
    const [parsed] = decodeEvents(body, "json", { maxEvents });
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
        id: e.identifier ?? v2EventId(apiKey.id, idempotencyKey, body, index),
        customer: payload?.[customerKey],
        type: e.event_name,
        time: e.timestamp,
        properties: payload === null ? e.payload : withoutKey(payload, customerKey),
        source,
      };
    });
    return { raws, errors, rename: v2Rename, answer: () => ({ status: 200, body: {} }) };
  },
};
