import type { TallyEvent } from "./event.js";

/**
 * Base class of every error the SDK throws or reports through `onError`.
 * Switch on `code` (stable), not on the message.
 *
 * @example
 * ```ts
 * try {
 *   tally.track(event);
 * } catch (err) {
 *   if (err instanceof TallyError) log.warn({ code: err.code }, err.message);
 * }
 * ```
 */
export class TallyError extends Error {
  override name = "TallyError";
  /** Stable, machine-readable reason. */
  readonly code: TallyErrorCode;

  constructor(code: TallyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Every `TallyError.code`.
 *
 * @example
 * ```ts
 * const retryable: TallyErrorCode[] = ["buffer_full"];
 * ```
 */
export type TallyErrorCode = "invalid_event" | "buffer_full" | "closed" | "rejected" | "retries_exhausted";

/**
 * Thrown synchronously by `track()` when the event can never be accepted by the server
 * (missing `type`, a property value that is not a string/number/boolean, a number that is
 * not finite or not exactly representable, ...). Nothing was buffered.
 *
 * @example
 * ```ts
 * try {
 *   tally.track({ type: "api_call", customer: "acme", properties: { tokens: NaN } });
 * } catch (err) {
 *   if (err instanceof TallyValidationError) console.log(err.field, err.reason); // "properties.tokens" "imprecise_number"
 * }
 * ```
 */
export class TallyValidationError extends TallyError {
  override name = "TallyValidationError";
  /** The offending field, e.g. `customer` or `properties.tokens`. */
  readonly field: string;
  /** Why, using the server's field error codes: `required`, `invalid_type`, `too_long`, `imprecise_number`, `invalid_unicode`, `reserved_key`, ... */
  readonly reason: string;

  constructor(field: string, reason: string, message: string) {
    super("invalid_event", `${field}: ${message}`);
    this.field = field;
    this.reason = reason;
  }
}

/**
 * Thrown synchronously by `track()` when `maxBufferedEvents` events are already waiting
 * (tracked but not yet acknowledged by the server). The event was NOT buffered: the caller
 * still holds it and decides (retry later, `await tally.trackAsync(event)`, persist it, or fail
 * the request). The SDK never drops a tracked event silently.
 *
 * @example
 * ```ts
 * try {
 *   tally.track(event);
 * } catch (err) {
 *   if (err instanceof TallyBufferFullError) await tally.trackAsync(event); // wait for room instead
 *   else throw err;
 * }
 * ```
 */
export class TallyBufferFullError extends TallyError {
  override name = "TallyBufferFullError";
  /** The configured `maxBufferedEvents`. */
  readonly limit: number;

  constructor(limit: number) {
    super(
      "buffer_full",
      `${limit} events are buffered and not yet acknowledged (maxBufferedEvents); the event was not tracked`,
    );
    this.limit = limit;
  }
}

/**
 * Thrown by `track()` after `close()` was called.
 *
 * @example
 * ```ts
 * await tally.close();
 * tally.track(event); // throws TallyClosedError
 * ```
 */
export class TallyClosedError extends TallyError {
  override name = "TallyClosedError";

  constructor() {
    super("closed", "this Tally client is closed; events can no longer be tracked");
  }
}

/** The server's error body: `{ error: { code, message, details, requestId } }`. */
export interface ServerErrorBody {
  code: string;
  message: string;
  details?: unknown;
  requestId?: string;
}

/**
 * Reported through `onError` when the server refused a batch permanently (400, 401, 403, 413 or
 * another 4xx but 408/429). The batch is not retried: sending it again would get the same
 * answer. `events` holds the refused events so they can be stored or fixed and re-tracked.
 *
 * @example
 * ```ts
 * const tally = new Tally({
 *   url, apiKey,
 *   onError(err) {
 *     if (err instanceof TallyRejectedError) log.error({ status: err.status, code: err.serverCode, details: err.details }, err.message);
 *   },
 * });
 * ```
 */
export class TallyRejectedError extends TallyError {
  override name = "TallyRejectedError";
  /** HTTP status. */
  readonly status: number;
  /** The server's `error.code`, e.g. `invalid_events`, `unauthorized`; `unknown` if the body had none. */
  readonly serverCode: string;
  /** The server's `error.details`, e.g. `{ invalid, errors: [{ index, field, code, message }] }`. */
  readonly details: unknown;
  /** The server's request id, for support. */
  readonly requestId: string | undefined;
  /** The events of the refused batch. */
  readonly events: TallyEvent[];

  constructor(status: number, body: ServerErrorBody | undefined, events: TallyEvent[]) {
    super(
      "rejected",
      `server refused ${events.length} events with ${status}${body ? ` ${body.code}: ${body.message}` : ""}`,
    );
    this.status = status;
    this.serverCode = body?.code ?? "unknown";
    this.details = body?.details;
    this.requestId = body?.requestId;
    this.events = events;
  }
}

/**
 * Reported through `onError` when a batch still failed (network error, timeout, 429 or 5xx)
 * after `retry.maxAttempts` attempts. `cause` is the last failure; `events` the events of the
 * batch (safe to track again later with the same ids: the server counts each id once).
 *
 * @example
 * ```ts
 * onError(err) {
 *   if (err instanceof TallyRetriesExhaustedError) await spool.write(err.events);
 * }
 * ```
 */
export class TallyRetriesExhaustedError extends TallyError {
  override name = "TallyRetriesExhaustedError";
  /** Attempts made. */
  readonly attempts: number;
  /** HTTP status of the last attempt, if it got an answer. */
  readonly status: number | undefined;
  /** The events of the failed batch. */
  readonly events: TallyEvent[];

  constructor(attempts: number, status: number | undefined, cause: unknown, events: TallyEvent[]) {
    super(
      "retries_exhausted",
      `sending ${events.length} events failed after ${attempts} attempts: ${
        status !== undefined ? `HTTP ${status}` : cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.attempts = attempts;
    this.status = status;
    this.events = events;
  }
}
