import { z } from "zod";
import { parseRfc3339 } from "../events/index.js";
import { ApiError } from "../lib/errors.js";

/** A time query parameter: RFC 3339 or epoch milliseconds, as epoch ms. */
export const timeParam = z.string().transform((s, ctx) => {
  const ms = /^\d+$/.test(s) ? Number(s) : parseRfc3339(s);
  if (ms === null || !Number.isSafeInteger(ms)) {
    ctx.addIssue({ code: "custom", message: "must be RFC 3339 or epoch milliseconds" });
    return z.NEVER;
  }
  return ms;
});

/**
 * Validates query parameters or a JSON body; on failure throws `400 invalid_request` whose
 * details name every bad field: `[{ field, code, message }]`.
 */
export function parseWith<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const r = schema.safeParse(input);
  if (!r.success) {
    throw new ApiError(
      "invalid_request",
      r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
      r.error.issues.map((i) => ({ field: i.path.join("."), code: i.code, message: i.message })),
    );
  }
  return r.data;
}
