import Big from "big.js";
import type { FieldError } from "../lib/errors.js";
import { eventLimits as L, typePattern } from "./limits.js";

/** A validated event, ready for the bus (mirrors the protobuf `tally.v1.BusEvent`). */
export interface NormalizedEvent {
  id: string;
  type: string;
  customer: string;
  timeMs: number;
  receivedMs: number;
  source: string;
  propKeys: string[];
  propValues: string[];
}

/** Context for validating one request: receive time and the backfill horizon. */
export interface NormalizeContext {
  nowMs: number;
  backfillDays: number;
}

const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/** Value of the ASCII digits `s[from, from + n)`, or -1 when one is not a digit. */
function digits(s: string, from: number, n: number): number {
  let v = 0;
  for (let i = from; i < from + n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * The form nearly every client sends, `2026-11-25T10:00:00Z` or with `.1` to `.123` (what
 * `toISOString` writes), read without a regex or `Date.parse` (they were 8 % of the edge's
 * CPU under batch load). Returns undefined for anything else, which {@link parseRfc3339}
 * then reads the general way; the instant is the one `Date.parse` gives for the same text.
 */
function parseCommonUtc(s: string): number | null | undefined {
  const len = s.length;
  if (len !== 20 && (len < 22 || len > 24)) return undefined;
  if (
    s.charCodeAt(4) !== 45 || // -
    s.charCodeAt(7) !== 45 ||
    s.charCodeAt(10) !== 84 || // T
    s.charCodeAt(13) !== 58 || // :
    s.charCodeAt(16) !== 58 ||
    s.charCodeAt(len - 1) !== 90 // Z
  ) {
    return undefined;
  }
  const y = digits(s, 0, 4);
  // Date.UTC maps years 0-99 to 1900-1999; leave those (and seconds = 60) to Date.parse.
  if (y < 100) return undefined;
  const mo = digits(s, 5, 2);
  const d = digits(s, 8, 2);
  const h = digits(s, 11, 2);
  const mi = digits(s, 14, 2);
  const se = digits(s, 17, 2);
  if (mo < 0 || d < 0 || h < 0 || mi < 0 || se < 0 || se === 60) return undefined;
  let ms = 0;
  if (len > 20) {
    if (s.charCodeAt(19) !== 46) return undefined; // .
    const n = len - 21;
    ms = digits(s, 20, n);
    if (ms < 0) return undefined;
    ms *= n === 1 ? 100 : n === 2 ? 10 : 1;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || se > 59) return null;
  return Date.UTC(y, mo - 1, d, h, mi, se, ms);
}

/** Parses strict RFC 3339 (`2026-11-25T10:00:00.123Z`, offsets allowed) to epoch ms, or null. */
export function parseRfc3339(s: string): number | null {
  const common = parseCommonUtc(s);
  if (common !== undefined) return common;
  const m = rfc3339.exec(s);
  if (m === null) return null;
  const [, y, mo, d, h, mi, se] = m;
  const month = Number(mo);
  const day = Number(d);
  if (
    month < 1 ||
    month > 12 ||
    day < 1 ||
    day > 31 ||
    Number(h) > 23 ||
    Number(mi) > 59 ||
    Number(se) > 60
  ) {
    return null;
  }
  const ms = Date.parse(s.replace(" ", "T"));
  if (Number.isNaN(ms)) return null;
  // Date.parse rolls 2026-02-30 over to March; reject dates that do not exist.
  const check = new Date(Date.UTC(Number(y), month - 1, day));
  if (check.getUTCDate() !== day) return null;
  return ms;
}

/**
 * Turns a JSON number into an exact decimal string, or null when the number cannot be the
 * value the client wrote (more than 15 significant digits, or beyond 2^53 for integers).
 */
export function exactNumber(n: number): string | null {
  if (!Number.isFinite(n)) return null;
  if (Number.isInteger(n)) return Number.isSafeInteger(n) ? String(n) : null;
  const text = String(n);
  const digits = text.replace(/e.*$/i, "").replace(/[-.]/g, "").replace(/^0+/, "").length;
  if (digits > L.maxNumberDigits) return null;
  return text.includes("e") ? new Big(text).toFixed() : text;
}

function fail(errors: FieldError[], index: number, field: string, code: string, message: string): void {
  errors.push({ index, field, code, message });
}

/**
 * True when `s` is well-formed UTF-16 (no lone surrogate), i.e. has a UTF-8 encoding.
 * A lone surrogate would be written to the bus as bytes the sink's decoder rejects, and the
 * sink dead-letters the whole group-committed message, other requests' events included; so
 * every string that reaches the bus is checked here. `isWellFormed` is ES2024 (Node 20 has it;
 * our TypeScript lib is ES2023) and costs ~15 ns for an ASCII string.
 */
export function isWellFormed(s: string): boolean {
  return (s as string & { isWellFormed(): boolean }).isWellFormed();
}

const invalidUnicode = "is not well-formed Unicode (it holds a lone UTF-16 surrogate)";

/** The top-level fields of a native event; any other key is a typo the client must hear about. */
function isKnownField(k: string): boolean {
  switch (k) {
    case "id":
    case "type":
    case "customer":
    case "time":
    case "properties":
    case "source":
      return true;
    default:
      return false;
  }
}

function checkString(
  errors: FieldError[],
  index: number,
  field: string,
  v: unknown,
  maxLength: number,
  required: boolean,
): string | undefined {
  if (v === undefined || v === null) {
    if (required) fail(errors, index, field, "required", `${field} is required`);
    return undefined;
  }
  if (typeof v !== "string") {
    fail(errors, index, field, "invalid_type", `${field} must be a string`);
    return undefined;
  }
  if (required && v.length === 0) {
    fail(errors, index, field, "required", `${field} must not be empty`);
    return undefined;
  }
  if (v.length > maxLength) {
    fail(errors, index, field, "too_long", `${field} must be at most ${maxLength} characters`);
    return undefined;
  }
  if (!isWellFormed(v)) {
    fail(errors, index, field, "invalid_unicode", `${field} ${invalidUnicode}`);
    return undefined;
  }
  return v;
}

/** Flattened properties of one event, in parallel arrays (the bus form). */
interface Flat {
  keys: string[];
  values: string[];
  /** Some key segment holds a dot, so two different paths may flatten to one key. */
  dotted: boolean;
}

function flatten(
  errors: FieldError[],
  index: number,
  obj: Record<string, unknown>,
  prefix: string,
  depth: number,
  out: Flat,
): void {
  if (depth > L.maxPropertyDepth) {
    fail(
      errors,
      index,
      `properties${prefix}`,
      "too_deep",
      `properties nest at most ${L.maxPropertyDepth} levels`,
    );
    return;
  }
  for (const k in obj) {
    // Own keys only: an adapter-built object may inherit enumerable keys we must not invent.
    if (!Object.hasOwn(obj, k)) continue;
    const v = obj[k];
    const key = prefix === "" ? k : `${prefix.slice(1)}.${k}`;
    // The field name (`properties.a.b`) is built only for an error: most events have none.
    if (k.length === 0) {
      fail(errors, index, `properties.${key}`, "invalid_key", "property keys must not be empty");
      continue;
    }
    if (!isWellFormed(k)) {
      fail(errors, index, `properties.${key}`, "invalid_unicode", `property key ${invalidUnicode}`);
      continue;
    }
    if (k === "__proto__") {
      // JSON.parse makes it an own key, but every plain object the properties later pass
      // through (spreads, `obj[k] = v`, vendor payloads, the debugger) would treat it as the
      // prototype and drop it, so it cannot round-trip: refuse it rather than lose it later.
      // `constructor` and `prototype` are ordinary own keys and are kept.
      fail(errors, index, `properties.${key}`, "reserved_key", "__proto__ cannot be used as a property key");
      continue;
    }
    if (key.length > L.propertyKeyMaxLength) {
      fail(
        errors,
        index,
        `properties.${key}`,
        "too_long",
        `property keys must be at most ${L.propertyKeyMaxLength} characters`,
      );
      continue;
    }
    if (!out.dotted && k.includes(".")) out.dotted = true;
    let text: string | null;
    switch (typeof v) {
      case "string":
        if (!isWellFormed(v)) {
          fail(errors, index, `properties.${key}`, "invalid_unicode", `properties.${key} ${invalidUnicode}`);
          continue;
        }
        text = v;
        break;
      case "number":
        text = exactNumber(v);
        if (text === null) {
          fail(
            errors,
            index,
            `properties.${key}`,
            "imprecise_number",
            `properties.${key} has more than ${L.maxNumberDigits} significant digits or is not finite; send it as a decimal string`,
          );
          continue;
        }
        break;
      case "boolean":
        text = v ? "true" : "false";
        break;
      case "object":
        if (v === null) continue; // null means "not set"
        if (Array.isArray(v)) {
          fail(
            errors,
            index,
            `properties.${key}`,
            "invalid_type",
            `properties.${key} is an array; property values are strings, numbers, booleans or objects`,
          );
          continue;
        }
        flatten(errors, index, v as Record<string, unknown>, `${prefix}.${k}`, depth + 1, out);
        continue;
      default:
        fail(errors, index, `properties.${key}`, "invalid_type", `properties.${key} has an unsupported type`);
        continue;
    }
    if (text.length > L.propertyValueMaxLength) {
      fail(
        errors,
        index,
        `properties.${key}`,
        "too_long",
        `properties.${key} must be at most ${L.propertyValueMaxLength} characters`,
      );
      continue;
    }
    out.keys.push(key);
    out.values.push(text);
  }
}

/**
 * Flattening is only ambiguous when a key holds a dot: `{"a.b": 1, "a": {"b": 2}}` would store
 * two `a.b` values, which a meter (first match) and the debugger (last match) read differently.
 * Each colliding key is reported once.
 */
function rejectCollisions(errors: FieldError[], index: number, keys: readonly string[]): void {
  const seen = new Set<string>();
  const reported = new Set<string>();
  for (const k of keys) {
    if (!seen.has(k)) {
      seen.add(k);
      continue;
    }
    if (reported.has(k)) continue;
    reported.add(k);
    fail(
      errors,
      index,
      `properties.${k}`,
      "duplicate_key",
      `properties.${k} is given more than once after nested objects are flattened to dotted keys (e.g. "a.b" and {"a": {"b": ...}}); give it once`,
    );
  }
}

/**
 * Validates one raw event (already JSON-decoded) and normalizes it for the bus.
 * Returns null and appends to `errors` (every problem, each naming its field) when invalid.
 *
 * NOTE: hand-written rather than a zod schema on purpose: this runs for every event at
 * hundreds of thousands of events per second, and must report every field error at once.
 */
export function normalizeEvent(
  raw: unknown,
  index: number,
  ctx: NormalizeContext,
  errors: FieldError[],
): NormalizedEvent | null {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    fail(errors, index, "", "invalid_type", "an event must be a JSON object");
    return null;
  }
  const e = raw as Record<string, unknown>;
  const before = errors.length;
  const id = checkString(errors, index, "id", e.id, L.idMaxLength, true);
  const customer = checkString(errors, index, "customer", e.customer, L.customerMaxLength, true);
  const type = checkString(errors, index, "type", e.type, L.typeMaxLength, true);
  if (type !== undefined && !typePattern.test(type)) {
    fail(
      errors,
      index,
      "type",
      "invalid_format",
      "type may contain letters, digits and _ . : - / and must start with a letter or digit",
    );
  }
  const source = checkString(errors, index, "source", e.source, L.sourceMaxLength, false) ?? "";

  let timeMs = ctx.nowMs;
  const t = e.time;
  if (t !== undefined && t !== null) {
    let parsed: number | null = null;
    if (typeof t === "string") {
      parsed = parseRfc3339(t);
      if (parsed === null)
        fail(
          errors,
          index,
          "time",
          "invalid_format",
          "time must be RFC 3339 (e.g. 2026-11-25T10:00:00Z) or epoch milliseconds",
        );
    } else if (typeof t === "number") {
      if (Number.isSafeInteger(t) && t >= 0) parsed = t;
      else
        fail(
          errors,
          index,
          "time",
          "invalid_format",
          "time in epoch milliseconds must be a non-negative integer",
        );
    } else {
      fail(errors, index, "time", "invalid_type", "time must be an RFC 3339 string or epoch milliseconds");
    }
    if (parsed !== null) {
      if (parsed > ctx.nowMs + L.maxFutureMs) {
        fail(errors, index, "time", "too_far_in_future", "time is more than 5 minutes in the future");
      } else if (parsed < ctx.nowMs - ctx.backfillDays * 86_400_000) {
        fail(
          errors,
          index,
          "time",
          "too_old",
          `time is older than the backfill horizon of ${ctx.backfillDays} days`,
        );
      } else {
        timeMs = parsed;
      }
    }
  }

  const flat: Flat = { keys: [], values: [], dotted: false };
  const propKeys = flat.keys;
  const propValues = flat.values;
  const p = e.properties;
  if (p !== undefined && p !== null) {
    if (typeof p !== "object" || Array.isArray(p)) {
      fail(errors, index, "properties", "invalid_type", "properties must be a JSON object");
    } else {
      flatten(errors, index, p as Record<string, unknown>, "", 1, flat);
      if (flat.dotted) rejectCollisions(errors, index, propKeys);
      if (propKeys.length > L.maxProperties) {
        fail(
          errors,
          index,
          "properties",
          "too_many",
          `at most ${L.maxProperties} properties (after flattening)`,
        );
      } else {
        let size = 0;
        for (let i = 0; i < propKeys.length; i++) size += propKeys[i]!.length + propValues[i]!.length;
        if (size > L.maxPropertyBytes) {
          fail(
            errors,
            index,
            "properties",
            "too_large",
            `properties must total at most ${L.maxPropertyBytes} characters`,
          );
        }
      }
    }
  }

  for (const k in e) {
    // `undefined` is how an adapter says "not given" (JSON cannot express it), so only keys
    // with a value count as unknown.
    if (!isKnownField(k) && e[k] !== undefined) {
      fail(
        errors,
        index,
        k,
        "unknown_field",
        "is not an event field; events have id, type, customer, time, properties and source",
      );
    }
  }

  if (errors.length !== before) return null;
  return {
    id: id!,
    type: type!,
    customer: customer!,
    timeMs,
    receivedMs: ctx.nowMs,
    source,
    propKeys,
    propValues,
  };
}
