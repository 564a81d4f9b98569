import type { FormObject, FormValue } from "./form.js";

/**
 * Stripe's error envelope `{ error: { type, code?, message, param?, doc_url? } }`.
 * https://docs.stripe.com/api/errors: "type … One of api_error, card_error, idempotency_error, or
 * invalid_request_error"; HTTP status table 400/401/402/403/404/409/424/429/5xx.
 * stripe-node 23 picks the error class from the status first (`Error.js#generateV1Error`: 429 →
 * StripeRateLimitError; 400/404 with type idempotency_error → StripeIdempotencyError; other
 * 400/404 → StripeInvalidRequestError; 401 → StripeAuthenticationError; else StripeAPIError).
 */
export type StripeErrorType = "api_error" | "card_error" | "idempotency_error" | "invalid_request_error";

export interface StripeErrorBody {
  error: {
    type: StripeErrorType;
    message: string;
    code?: string;
    param?: string;
    doc_url?: string;
  };
}

/**
 * `phase` says whether the error happened before the endpoint began executing (`validation`: not
 * saved under the idempotency key, https://docs.stripe.com/idempotency "If incoming parameters fail
 * validation … no idempotent result is saved") or during execution (`execution`: saved and replayed,
 * https://docs.stripe.com/error-low-level "A request that returns a 400 sends back the same 400").
 */
export class StripeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: StripeErrorType,
    message: string,
    readonly extra: { code?: string; param?: string; doc_url?: string } = {},
    readonly phase: "validation" | "execution" = "validation",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): StripeErrorBody {
    const error: StripeErrorBody["error"] = { type: this.type, message: this.message };
    if (this.extra.code !== undefined) error.code = this.extra.code;
    if (this.extra.param !== undefined) error.param = this.extra.param;
    const docUrl =
      this.extra.doc_url ??
      (this.extra.code !== undefined
        ? `https://docs.stripe.com/error-codes/${this.extra.code.replace(/_/g, "-")}`
        : undefined);
    if (docUrl !== undefined) error.doc_url = docUrl;
    return { error };
  }
}

export const invalid = (
  message: string,
  param: string | undefined,
  code?: string,
  phase: "validation" | "execution" = "validation",
): StripeHttpError => {
  const extra: { code?: string; param?: string } = {};
  if (code !== undefined) extra.code = code;
  if (param !== undefined) extra.param = param;
  return new StripeHttpError(400, "invalid_request_error", message, extra, phase);
};

/** A missing object named in the URL is a 404; one named in a parameter is a 400 with `param`. */
export const missing = (kind: string, id: string, param?: string): StripeHttpError =>
  new StripeHttpError(
    param === undefined ? 404 : 400,
    "invalid_request_error",
    `No such ${kind}: '${id}'`,
    param === undefined ? { code: "resource_missing" } : { code: "resource_missing", param },
    "execution",
  );

// ---- parameter readers: Stripe coerces strings per parameter and names the offending one ----

/** Rejects parameters the endpoint does not take, as Stripe does ("Received unknown parameter"). */
export function onlyParams(params: FormObject, allowed: readonly string[], prefix = ""): void {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) {
      const name = prefix === "" ? key : `${prefix}[${key}]`;
      throw invalid(`Received unknown parameter: ${name}`, name, "parameter_unknown");
    }
  }
}

export function str(params: FormObject, key: string, param = key): string | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalid(`Invalid string: ${param}`, param, "parameter_invalid_string");
  return v;
}

export function requiredStr(params: FormObject, key: string, param = key): string {
  const v = str(params, key, param);
  if (v === undefined || v === "") {
    throw invalid(`Missing required param: ${param}.`, param, "parameter_missing");
  }
  return v;
}

export function int(params: FormObject, key: string, param = key): number | undefined {
  const v = str(params, key, param);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw invalid(`Invalid integer: ${v}`, param, "parameter_invalid_integer");
  }
  return Number(v);
}

export function bool(params: FormObject, key: string, param = key): boolean | undefined {
  const v = str(params, key, param);
  if (v === undefined) return undefined;
  if (v !== "true" && v !== "false") throw invalid(`Invalid boolean: ${v}`, param);
  return v === "true";
}

export function oneOf<T extends string>(
  params: FormObject,
  key: string,
  values: readonly T[],
  param = key,
): T | undefined {
  const v = str(params, key, param);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) {
    throw invalid(`Invalid ${param}: must be one of ${values.join(", ")}`, param);
  }
  return v as T;
}

export function obj(params: FormObject, key: string, param = key): FormObject | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (typeof v === "string" || Array.isArray(v)) throw invalid(`Invalid object: ${param}`, param);
  return v;
}

export function arr(params: FormObject, key: string, param = key): FormValue[] | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  // qs-style objects with numeric keys also reach here as arrays (see form.ts).
  if (!Array.isArray(v)) throw invalid(`Invalid array: ${param}`, param);
  return v;
}

/**
 * Metadata rules from https://docs.stripe.com/metadata and https://docs.stripe.com/api/metadata:
 * up to 50 keys, key ≤ 40 characters without `[` or `]`, value ≤ 500 characters; "Individual keys
 * can be unset by posting an empty value to them. All keys can be unset by posting an empty value
 * to `metadata`" (stripe@23.1.0 `Invoices.d.ts`). Returns the merged metadata.
 */
export function mergeMetadata(
  current: Record<string, string>,
  raw: FormValue | undefined,
  param: string,
): Record<string, string> {
  if (raw === undefined) return current;
  if (raw === "") return {};
  if (typeof raw === "string" || Array.isArray(raw)) throw invalid(`Invalid object: ${param}`, param);
  const next = { ...current };
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== "string") throw invalid(`Invalid string: ${param}[${key}]`, `${param}[${key}]`);
    if (key.length > 40) {
      throw invalid(
        `Metadata keys can have up to 40 characters; ${key} has ${key.length}.`,
        `${param}[${key}]`,
      );
    }
    if (value.length > 500) {
      throw invalid(
        `Metadata values can have up to 500 characters, but you passed in a value that is ${value.length} characters.`,
        `${param}[${key}]`,
      );
    }
    if (value === "") delete next[key];
    else next[key] = value;
  }
  if (Object.keys(next).length > 50) {
    throw invalid("You can specify up to 50 keys in metadata.", param);
  }
  return next;
}
