import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError } from "../lib/errors.js";
import type { Logger } from "../observability/index.js";
import type { EdgeEnv } from "./context.js";

/** Renders every error as `{ error: { code, message, details, requestId } }`. */
export function onError(log: Logger) {
  return (err: Error, c: Context<EdgeEnv>) => {
    const requestId = c.get("requestId");
    let apiErr: ApiError;
    if (err instanceof ApiError) {
      apiErr = err;
    } else if (err instanceof HTTPException && err.status === 413) {
      apiErr = new ApiError("payload_too_large", "request body is too large");
    } else {
      log.error({ err, requestId }, "unhandled error");
      apiErr = new ApiError("internal", "internal error");
    }
    if (apiErr.retryAfterSeconds !== undefined) c.header("Retry-After", String(apiErr.retryAfterSeconds));
    return c.json(
      { error: { code: apiErr.code, message: apiErr.message, details: apiErr.details ?? null, requestId } },
      apiErr.status,
    );
  };
}
