import type { FieldError } from "../lib/errors.js";
import { normalizeEvent, type NormalizeContext, type NormalizedEvent } from "./normalize.js";

/** Result of validating one request's events. */
export interface ValidatedBatch {
  /** Valid events, first occurrence of each id only. */
  events: NormalizedEvent[];
  /** Events dropped because an earlier event in the same request had the same id. */
  duplicates: number;
  errors: FieldError[];
}

/**
 * Validates every event of a request. All-or-nothing: callers write nothing when `errors`
 * is non-empty. Ids repeated within the request are counted once (the first wins).
 */
export function validateEvents(raw: unknown[], ctx: NormalizeContext): ValidatedBatch {
  const errors: FieldError[] = [];
  const events: NormalizedEvent[] = [];
  const seen = raw.length > 1 ? new Set<string>() : null;
  let duplicates = 0;
  for (let i = 0; i < raw.length; i++) {
    const e = normalizeEvent(raw[i], i, ctx, errors);
    if (e === null) continue;
    if (seen !== null) {
      if (seen.has(e.id)) {
        duplicates++;
        continue;
      }
      seen.add(e.id);
    }
    events.push(e);
  }
  return { events, duplicates, errors };
}
