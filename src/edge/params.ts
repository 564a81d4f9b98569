import { z } from "zod";
import { parseRfc3339 } from "../events/index.js";
import { ApiError, type FieldError } from "../lib/errors.js";

/** Earliest and latest instants a time parameter may name: 1970-01-01 .. 9999-12-31 (UTC). */
export const minTimeMs = 0;
export const maxTimeMs = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * A time query parameter: RFC 3339 or epoch milliseconds, as epoch ms, within
 * 1970-01-01 .. 9999-12-31 so that every later date computation (windows, ISO strings,
 * ClickHouse DateTime64) is defined: out of range is a 400 naming the parameter, not a 500.
 */
export const timeParam = z.string().transform((s, ctx) => {
  const ms = /^\d+$/.test(s) ? Number(s) : parseRfc3339(s);
  if (ms === null || !Number.isSafeInteger(ms)) {
    ctx.addIssue({ code: "custom", message: "must be RFC 3339 or epoch milliseconds" });
    return z.NEVER;
  }
  if (ms < minTimeMs || ms > maxTimeMs) {
    ctx.addIssue({
      code: "custom",
      message: "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z",
    });
    return z.NEVER;
  }
  return ms;
});

/** One field error per zod issue; an unknown key is named as the field itself. */
function fieldErrors(issues: z.core.$ZodIssue[]): FieldError[] {
  return issues.flatMap((i): FieldError[] => {
    const path = i.path.map(String);
    if (i.code === "unrecognized_keys") {
      return i.keys.map((k) => ({
        field: [...path, k].join("."),
        code: "unknown_field",
        message: "unknown field",
      }));
    }
    return [{ field: path.join("."), code: i.code, message: i.message }];
  });
}

/**
 * Validates query parameters or a JSON body; on failure throws `400 invalid_request` whose
 * details name every bad field: `[{ field, code, message }]`.
 */
export function parseWith<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const r = schema.safeParse(input);
  if (!r.success) {
    const errors = fieldErrors(r.error.issues);
    throw new ApiError("invalid_request", errors.map((e) => `${e.field}: ${e.message}`).join("; "), errors);
  }
  return r.data;
}

/**
 * Encodes a list position as an opaque cursor (base64url JSON), for `next_cursor`.
 */
export function encodeCursor(position: unknown): string {
  return Buffer.from(JSON.stringify(position)).toString("base64url");
}

/**
 * Decodes a `cursor` query parameter made by {@link encodeCursor}; anything else is a 400
 * naming `cursor`.
 */
export function decodeCursor<T extends z.ZodType>(schema: T, cursor: string): z.infer<T> {
  try {
    return schema.parse(JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")));
  } catch {
    throw new ApiError("invalid_request", "cursor: not a cursor returned by this API", [
      { field: "cursor", code: "invalid", message: "not a cursor returned by this API" },
    ]);
  }
}
