import type { ContentfulStatusCode } from "hono/utils/http-status";

/** Stable error codes of the HTTP API, each mapped to one status. */
export const errorStatus = {
  invalid_request: 400,
  invalid_events: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  /** A feature whose configuration is missing (the journal without a catalog `accounts:` section). */
  not_configured: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof errorStatus;

/** One problem with one field, e.g. `{ index: 3, field: "time", code: "too_old", message }`. */
export interface FieldError {
  index?: number;
  field: string;
  code: string;
  message: string;
}

/**
 * The one error type the HTTP API throws; `onError` renders it as
 * `{ error: { code, message, details, requestId } }`.
 */
export class ApiError extends Error {
  override name = "ApiError";
  readonly code: ErrorCode;
  readonly details: unknown;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, details?: unknown, retryAfterSeconds?: number) {
    super(message);
    this.code = code;
    // One envelope (STYLE.md): field errors always travel as `details.errors`, whoever throws.
    this.details = Array.isArray(details) ? { errors: details } : details;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  get status(): ContentfulStatusCode {
    return errorStatus[this.code];
  }
}
