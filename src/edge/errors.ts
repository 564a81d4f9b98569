import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { clickHouseErrorCode } from "../clickhouse/index.js";
import { ApiError, type FieldError } from "../lib/errors.js";
import type { Logger } from "../observability/index.js";
import type { EdgeEnv } from "./context.js";

/** Renders an {@link ApiError} in one route's error shape (Tally's, or a vendor's). */
export type ErrorRenderer = (c: Context<EdgeEnv>, err: ApiError) => Response;

/** Most field errors listed in one 400 (the total is always given). */
export const maxListedErrors = 1000;

/**
 * The one `invalid_events` error: `details = { invalid, errors: [{ index, field, code, message }],
 * truncated }`, `invalid` counting distinct event indexes, at most {@link maxListedErrors} listed.
 * `total` is the number of events in the request; `message` replaces the default message.
 */
export function invalidEvents(
  errors: FieldError[],
  opts: { total?: number; message?: string } = {},
): ApiError {
  const invalid = new Set(errors.map((e) => e.index)).size;
  return new ApiError(
    "invalid_events",
    opts.message ?? `${invalid} of ${opts.total ?? invalid} events are invalid; nothing was accepted`,
    { invalid, errors: errors.slice(0, maxListedErrors), truncated: errors.length > maxListedErrors },
  );
}

/** The field errors of an error (`details.errors`, the one layout), or none. */
export function fieldErrorsOf(err: ApiError): FieldError[] {
  const d = err.details as { errors?: unknown } | null | undefined;
  return d !== null && typeof d === "object" && Array.isArray(d.errors) ? (d.errors as FieldError[]) : [];
}

/** Anything thrown turned into an ApiError; unexpected errors are logged and become 500. */
export function toApiError(err: unknown, log: Logger, c: Context<EdgeEnv>): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HTTPException && err.status === 413) {
    return new ApiError("payload_too_large", "request body is too large");
  }
  // The read user's ClickHouse profile refused a read (deploy/clickhouse/): too many at once
  // (202) or one ran too long (159). Overload, not a bug: 503 with Retry-After on every route.
  const code = clickHouseErrorCode(err);
  if (code === "202")
    return new ApiError("unavailable", "too many reads at once; retry shortly", undefined, 1);
  if (code === "159")
    return new ApiError("unavailable", "the read ran too long; narrow it and retry", undefined, 5);
  log.error({ err, requestId: c.get("requestId") }, "unhandled error");
  return new ApiError("internal", "internal error");
}

/** Tally's shape: `{ error: { code, message, details, requestId } }`. */
export const renderTallyError: ErrorRenderer = (c, err) => {
  if (err.retryAfterSeconds !== undefined) c.header("Retry-After", String(err.retryAfterSeconds));
  return c.json(
    {
      error: {
        code: err.code,
        message: err.message,
        details: err.details ?? null,
        requestId: c.get("requestId"),
      },
    },
    err.status,
  );
};

/** Renders every error thrown by a route in Tally's shape. */
export function onError(log: Logger) {
  return (err: Error, c: Context<EdgeEnv>) => renderTallyError(c, toApiError(err, log, c));
}
