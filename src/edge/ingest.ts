import type { Context } from "hono";
import type { ApiKeyRecord } from "../auth/index.js";
import { decodeContent, validateEvents } from "../events/index.js";
import { ApiError, type FieldError } from "../lib/errors.js";
import type { EdgeDeps } from "./app.js";
import { readBodyLimited } from "./body.js";
import type { EdgeEnv } from "./context.js";
import { invalidEvents, toApiError, type ErrorRenderer } from "./errors.js";
import { countAccepted, countRejected } from "./metrics.js";

/** Translates a Tally field name (`customer`, `properties.gb`) into the route's (`subject`, `data.gb`). */
export type FieldRenamer = (field: string, index: number) => string;

/** What an adapter sees of a request: the decoded body and the few headers that carry meaning. */
export interface AdapterInput {
  /** The body after Content-Encoding was undone, within `TALLY_MAX_BODY_BYTES`. */
  body: Uint8Array;
  contentType: string | undefined;
  idempotencyKey: string | undefined;
  /** The authenticated key (for a Stripe session: the key that created it). */
  apiKey: ApiKeyRecord;
  /** Receive time of the request. */
  nowMs: number;
  /** `TALLY_MAX_EVENTS_PER_REQUEST`, for decoders that can count before materialising. */
  maxEvents: number;
}

/** Result of publishing one request's events. */
export interface IngestResult {
  accepted: number;
  duplicates: number;
}

/** A request mapped onto Tally raw events. */
export interface MappedRequest {
  /** Tally raw events (`{ id, type, customer, time, properties, source }`), one per route event. */
  raws: unknown[];
  /** Mapping problems, already named in the route's field names. */
  errors: FieldError[];
  /** Names Tally's validation errors in the route's field names. */
  rename: FieldRenamer;
  /** The 2xx answer once every event was published: `204` without a body, or a JSON body. */
  answer(result: IngestResult): { status: 204 } | { status: 200 | 202; body: unknown };
}

/** A pure adapter: request body → Tally raw events or field errors, and ApiError → the route's shape. */
export interface IngestAdapter {
  render: ErrorRenderer;
  /** Throws an ApiError for bodies it cannot read at all (400, 415). */
  map(input: AdapterInput): MappedRequest;
}

/** One ingest route: how it authenticates, what it accepts, which adapter reads it. */
export interface IngestRoute {
  /** Renders errors raised before the adapter is known (authentication, body limits). */
  render: ErrorRenderer;
  /** Authenticates from the request headers alone; throws 401/403 as ApiError. */
  authenticate(c: Context<EdgeEnv>): ApiKeyRecord;
  /** Refuses a Content-Type (415) before the body is read. */
  checkContentType?(contentType: string | undefined): void;
  /** The adapter, or a choice of adapter made from the decoded body (a path shared by two vendors). */
  adapter: IngestAdapter | ((body: Uint8Array, contentType: string | undefined) => IngestAdapter);
}

/**
 * The one ingest path of every route, native and vendor:
 * authenticate (headers only, before a byte of the body is read) → Content-Type → read the body
 * within the byte limit → undo gzip within the same limit → adapter → event-count limit →
 * `validateEvents` (all or nothing) → `publisher.publish`, which resolves only after JetStream
 * acknowledged every event (invariant 1) → the adapter's answer. Every error is rendered by the
 * route's renderer (the adapter's once the body chose it), with `Retry-After` when it has one.
 */
export function ingestHandler(deps: EdgeDeps, route: IngestRoute) {
  const { config, publisher, log } = deps;
  const maxBytes = config.limits.maxBodyBytes;
  const maxEvents = config.limits.maxEventsPerRequest;
  return async (c: Context<EdgeEnv>): Promise<Response> => {
    let render = route.render;
    try {
      const apiKey = route.authenticate(c);
      c.set("apiKey", apiKey);
      const contentType = c.req.header("content-type");
      route.checkContentType?.(contentType);
      const raw = await readBodyLimited(c, maxBytes);
      const body = decodeContent(raw, c.req.header("content-encoding"), maxBytes);
      const adapter = typeof route.adapter === "function" ? route.adapter(body, contentType) : route.adapter;
      render = adapter.render;
      const nowMs = (deps.now ?? Date.now)();
      let mapped: MappedRequest;
      try {
        mapped = adapter.map({
          body,
          contentType,
          idempotencyKey: c.req.header("idempotency-key"),
          apiKey,
          nowMs,
          maxEvents,
        });
      } catch (err: unknown) {
        const code = err instanceof ApiError ? err.code : "";
        countRejected(code === "payload_too_large" ? "too_many_events" : "malformed_body", 1);
        throw err;
      }
      const n = mapped.raws.length;
      if (n > maxEvents) {
        countRejected("too_many_events", n);
        throw new ApiError("payload_too_large", `at most ${maxEvents} events per request (got ${n})`);
      }
      if (n === 0) throw new ApiError("invalid_request", "no events in the body");
      const batch = validateEvents(mapped.raws, { nowMs, backfillDays: config.limits.backfillDays });
      if (mapped.errors.length > 0 || batch.errors.length > 0) {
        const errors = [
          ...mapped.errors,
          ...batch.errors.map((e) => ({ ...e, field: mapped.rename(e.field, e.index ?? 0) })),
        ].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
        for (const e of errors) countRejected(e.code, 1);
        throw invalidEvents(errors, { total: n });
      }
      await publisher.publish(batch.events);
      countAccepted(batch.events.length);
      const answer = mapped.answer({ accepted: batch.events.length, duplicates: batch.duplicates });
      return answer.status === 204 ? c.body(null, 204) : c.json(answer.body, answer.status);
    } catch (err: unknown) {
      const apiErr = toApiError(err, log, c);
      if (apiErr.retryAfterSeconds !== undefined) c.header("Retry-After", String(apiErr.retryAfterSeconds));
      return render(c, apiErr);
    }
  };
}
