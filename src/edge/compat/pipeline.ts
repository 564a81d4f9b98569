import type { Context, MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Scope } from "../../auth/index.js";
import { decodeContent, validateEvents } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import { readBodyLimited } from "../body.js";
import type { EdgeEnv } from "../context.js";
import { countAccepted, countRejected } from "../metrics.js";

/** Renders an {@link ApiError} in one vendor's error shape. */
export type ErrorRenderer = (c: Context<EdgeEnv>, err: ApiError) => Response;

/** Vendor events mapped to Tally raw events, plus the problems found while mapping. */
export interface MappedBatch {
  /** Tally raw events (`{ id, type, customer, time, properties, source }`), one per vendor event. */
  raws: unknown[];
  /** Mapping problems, already named in the vendor's field names. */
  errors: FieldError[];
}

/** Translates a Tally field name (`customer`, `properties.gb`) into the vendor's (`subject`, `data.gb`). */
export type FieldRenamer = (field: string, index: number) => string;

/** Anything thrown turned into an ApiError (unexpected errors are logged and become 500). */
export function asApiError(err: unknown, deps: EdgeDeps, c: Context<EdgeEnv>): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HTTPException && err.status === 413) {
    return new ApiError("payload_too_large", "request body is too large");
  }
  deps.log.error({ err, requestId: c.get("requestId") }, "unhandled error in compat route");
  return new ApiError("internal", "internal error");
}

/**
 * Runs `handler` with every error rendered in the vendor's shape. Hono's app-level `onError`
 * renders Tally's shape, so vendor routes catch their own errors, including those of the
 * auth and body-limit middleware they run inline.
 */
export function vendorRoute(
  deps: EdgeDeps,
  render: ErrorRenderer,
  handler: (c: Context<EdgeEnv>) => Promise<Response>,
) {
  return async (c: Context<EdgeEnv>): Promise<Response> => {
    try {
      return await handler(c);
    } catch (err: unknown) {
      const apiErr = asApiError(err, deps, c);
      if (apiErr.retryAfterSeconds !== undefined) c.header("Retry-After", String(apiErr.retryAfterSeconds));
      return render(c, apiErr);
    }
  };
}

const noop = async (): Promise<void> => {};

/** `requireScope` (same keys, same 401/403 rules as `/v1/events`), run inline so its errors reach the caller. */
export async function authorize(deps: EdgeDeps, c: Context<EdgeEnv>, scope: Scope = "ingest"): Promise<void> {
  const mw: MiddlewareHandler<EdgeEnv> = requireScope(deps.keys, scope);
  await mw(c as Context<EdgeEnv, string>, noop);
}

/**
 * Reads the body within `TALLY_MAX_BODY_BYTES` (compressed and, for gzip, decompressed),
 * the same bounds as `/v1/events`.
 */
export async function readBody(deps: EdgeDeps, c: Context<EdgeEnv>): Promise<Uint8Array> {
  const max = deps.config.limits.maxBodyBytes;
  const raw = await readBodyLimited(c, max);
  return decodeContent(raw, c.req.header("content-encoding"), max);
}

/** Field errors carried by an ApiError (`invalid_events` details come in two layouts). */
export function fieldErrors(err: ApiError): FieldError[] {
  const d = err.details as { errors?: unknown } | FieldError[] | null | undefined;
  if (Array.isArray(d)) return d;
  if (d !== null && typeof d === "object" && Array.isArray(d.errors)) return d.errors as FieldError[];
  return [];
}

/** Result of {@link ingest}. */
export interface IngestResult {
  accepted: number;
  duplicates: number;
}

/**
 * The one ingest path for every vendor: Tally's validation (`validateEvents`, all-or-nothing),
 * then `publisher.publish`, which resolves only after JetStream acknowledged every event
 * (invariant 1). Exactly-once is the sink's dedup by event id, as for `/v1/events`.
 * Validation errors are renamed to the vendor's field names and thrown as `invalid_events`.
 */
export async function ingest(
  deps: EdgeDeps,
  batch: MappedBatch,
  rename: FieldRenamer,
): Promise<IngestResult> {
  const { config, publisher } = deps;
  const n = batch.raws.length;
  if (n > config.limits.maxEventsPerRequest) {
    countRejected("too_many_events", n);
    throw new ApiError(
      "payload_too_large",
      `at most ${config.limits.maxEventsPerRequest} events per request (got ${n})`,
    );
  }
  if (n === 0) throw new ApiError("invalid_request", "no events in the body");
  const now = (deps.now ?? Date.now)();
  const validated = validateEvents(batch.raws, { nowMs: now, backfillDays: config.limits.backfillDays });
  const errors = [
    ...batch.errors,
    ...validated.errors.map((e) => ({ ...e, field: rename(e.field, e.index ?? 0) })),
  ].sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
  if (errors.length > 0) {
    for (const e of errors) countRejected(e.code, 1);
    const invalid = new Set(errors.map((e) => e.index)).size;
    throw new ApiError("invalid_events", `${invalid} of ${n} events are invalid; nothing was accepted`, {
      invalid,
      errors: errors.slice(0, 1000),
    });
  }
  await publisher.publish(validated.events);
  countAccepted(validated.events.length);
  return { accepted: validated.events.length, duplicates: validated.duplicates };
}

/**
 * A {@link FieldRenamer} from a table of top-level names and a function naming a property key
 * (`null` for the whole properties object); `prefix(index)` is prepended (e.g. `events[3].`).
 */
export function renamer(
  map: Record<string, string>,
  property: (key: string | null) => string,
  prefix: (index: number) => string = () => "",
): FieldRenamer {
  return (field, index) => {
    let name: string;
    if (field === "properties") name = property(null);
    else if (field.startsWith("properties.")) name = property(field.slice("properties.".length));
    else name = map[field] ?? field;
    return prefix(index) + name;
  };
}

/** Keys of an object that is a plain JSON object, or null. */
export function asObject(v: unknown): Record<string, unknown> | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}
