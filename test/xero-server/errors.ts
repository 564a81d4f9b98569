/**
 * Xero's error shapes.
 *
 * - 400 validation: `{ ErrorNumber: 10, Type: "ValidationException", Message: "A validation
 *   exception occurred", Elements: [{ ...the element, ValidationErrors: [{ Message }] }] }`
 *   (xero_accounting.yaml `Error` and `Element` schemas @e952d0b; ErrorNumber 10 and the Message are
 *   those of Xero's documented example on https://developer.xero.com/documentation/api/http-response-codes,
 *   as quoted in integration guides).
 * - 401/403/404/429 from the API gateway: an RFC 7807 problem document `{ Type, Title, Status,
 *   Detail }`. ASSUMED: the shape Xero's gateway is widely reported to send; clients must decide
 *   by status and headers, never by this text.
 */
export class XeroHttpError extends Error {
  constructor(
    readonly status: number,
    readonly payload: unknown,
    readonly headers: Record<string, string> = {},
    /**
     * `gate`: refused before the endpoint ran (auth, limits, malformed request): never saved under
     * an idempotency key. `execution`: the endpoint ran and refused: saved and replayed.
     */
    readonly phase: "gate" | "execution" = "gate",
  ) {
    super(
      typeof payload === "object" && payload !== null && "Message" in payload ? String(payload.Message) : "",
    );
  }
  body(): string {
    return JSON.stringify(this.payload);
  }
}

export function validationException(
  elements: unknown[],
  phase: "gate" | "execution" = "execution",
): XeroHttpError {
  return new XeroHttpError(
    400,
    {
      ErrorNumber: 10,
      Type: "ValidationException",
      Message: "A validation exception occurred",
      Elements: elements,
    },
    {},
    phase,
  );
}

/** A request the server cannot read (bad JSON, unsupported filter): a 400 with one message, not saved. */
export function badRequest(message: string): XeroHttpError {
  return new XeroHttpError(400, {
    ErrorNumber: 10,
    Type: "ValidationException",
    Message: message,
    Elements: [],
  });
}

export function problem(status: number, title: string, detail: string, headers: Record<string, string> = {}) {
  return new XeroHttpError(status, { Type: null, Title: title, Status: status, Detail: detail }, headers);
}
