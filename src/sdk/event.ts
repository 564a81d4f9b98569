import { uuidv7 } from "uuidv7";
import { eventLimits as L, exactNumber, isWellFormed, parseRfc3339, typePattern } from "../events/index.js";
import { tally } from "../gen/proto.js";
import { TallyValidationError } from "./errors.js";

/**
 * A property value. Numbers are sent as exact decimal strings (`1.5` → `"1.5"`); numbers that
 * have no exact decimal form the server would accept (NaN, ±Infinity, unsafe integers, more than
 * 15 significant digits such as `0.1 + 0.2`) are refused at `track()` time: send those as strings.
 *
 * @example
 * ```ts
 * const props: Record<string, PropertyValue> = { tokens: 1200, model: "small", cached: false, gb: "0.3" };
 * ```
 */
export type PropertyValue = string | number | boolean;

/**
 * One usage event as passed to `track()`.
 *
 * @example
 * ```ts
 * const event: TallyEvent = {
 *   type: "api_call",
 *   customer: "acme",
 *   properties: { tokens: 1200, model: "small" },
 * };
 * ```
 */
export interface TallyEvent {
  /**
   * Idempotency key (1–256 characters): the server counts an id once, whatever the retries.
   * Set it when the event has a natural id (a request id) so that re-tracking after a crash is
   * safe too.
   * @default a new UUIDv7, assigned at `track()` time
   */
  id?: string;
  /** Event type, e.g. `api_call` (1–128 characters of `A-Z a-z 0-9 _ . : - /`). */
  type: string;
  /** The customer the usage belongs to (1–256 characters). */
  customer: string;
  /**
   * When the usage happened: a `Date`, epoch milliseconds, or RFC 3339 text.
   * @default the time `track()` was called (not the time the batch is sent)
   */
  time?: Date | number | string;
  /** Properties (at most 64), e.g. quantities. */
  properties?: Record<string, PropertyValue>;
  /**
   * Where the event came from (service name, host).
   * @default the client's `source` option, else none
   */
  source?: string;
}

/** What `track()` buffers: the event's id and its encoded `tally.v1.Event`. */
export interface EncodedEvent {
  id: string;
  bytes: Uint8Array;
}

// A lone UTF-16 surrogate has no UTF-8 encoding: the server refuses it (`invalid_unicode`),
// so it is refused here, in the caller's stack, rather than failing the whole batch later.
const invalidUnicode = "is not well-formed Unicode (it holds a lone UTF-16 surrogate)";

function fail(field: string, reason: string, message: string): never {
  throw new TallyValidationError(field, reason, message);
}

function checkString(field: string, v: unknown, max: number, required: boolean): string {
  if (v === undefined || v === null) {
    if (required) fail(field, "required", "is required");
    return "";
  }
  if (typeof v !== "string") fail(field, "invalid_type", "must be a string");
  if (required && v.length === 0) fail(field, "required", "must not be empty");
  if (v.length > max) fail(field, "too_long", `must be at most ${max} characters`);
  if (!isWellFormed(v)) fail(field, "invalid_unicode", invalidUnicode);
  return v;
}

/**
 * Validates and encodes one event at `track()` time, so a mistake surfaces in the caller's
 * stack instead of as a rejected batch later, and the buffered form is compact bytes.
 * Mirrors the server's rules (src/events/normalize.ts) for everything that does not depend on
 * the server's clock or configuration (backfill window, future skew are checked there).
 */
export function encodeEvent(e: TallyEvent, nowMs: number, defaultSource: string | undefined): EncodedEvent {
  if (typeof e !== "object" || e === null) fail("", "invalid_type", "an event must be an object");
  const id = e.id === undefined ? uuidv7() : checkString("id", e.id, L.idMaxLength, true);
  const type = checkString("type", e.type, L.typeMaxLength, true);
  if (!typePattern.test(type))
    fail("type", "invalid_format", "must be letters, digits and _ . : - /, starting with a letter or digit");
  const customer = checkString("customer", e.customer, L.customerMaxLength, true);
  const source = checkString("source", e.source ?? defaultSource, L.sourceMaxLength, false);

  let time = "";
  let timeMs = nowMs;
  const t = e.time;
  if (t instanceof Date) {
    timeMs = t.getTime();
    if (!Number.isSafeInteger(timeMs) || timeMs < 0) fail("time", "invalid_format", "is an invalid Date");
  } else if (typeof t === "number") {
    if (!Number.isSafeInteger(t) || t < 0)
      fail("time", "invalid_format", "epoch milliseconds must be a non-negative integer");
    timeMs = t;
  } else if (typeof t === "string") {
    if (parseRfc3339(t) === null)
      fail("time", "invalid_format", "must be RFC 3339 (e.g. 2026-11-25T10:00:00Z) or epoch milliseconds");
    time = t;
    timeMs = 0;
  } else if (t !== undefined) {
    fail("time", "invalid_type", "must be a Date, epoch milliseconds or an RFC 3339 string");
  }

  const properties: Record<string, string> = {};
  const p = e.properties;
  if (p !== undefined && p !== null) {
    if (typeof p !== "object" || Array.isArray(p)) fail("properties", "invalid_type", "must be an object");
    let count = 0;
    let chars = 0;
    for (const k in p) {
      if (!Object.hasOwn(p, k)) continue;
      const field = `properties.${k}`;
      if (k.length === 0) fail(field, "invalid_key", "property keys must not be empty");
      if (k.length > L.propertyKeyMaxLength)
        fail(field, "too_long", `property keys must be at most ${L.propertyKeyMaxLength} characters`);
      if (!isWellFormed(k)) fail(field, "invalid_unicode", `property key ${invalidUnicode}`);
      // The server refuses it too (`reserved_key`); here `properties[k] = text` would also
      // set the prototype of the encoded map instead of a key, dropping the value silently.
      if (k === "__proto__") fail(field, "reserved_key", "__proto__ cannot be used as a property key");
      const v: unknown = p[k];
      let text: string;
      switch (typeof v) {
        case "string":
          if (!isWellFormed(v)) fail(field, "invalid_unicode", invalidUnicode);
          text = v;
          break;
        case "boolean":
          text = v ? "true" : "false";
          break;
        case "number": {
          const exact = exactNumber(v);
          if (exact === null)
            fail(
              field,
              "imprecise_number",
              `${v} is not finite, not a safe integer or has more than ${L.maxNumberDigits} significant digits; pass it as a decimal string`,
            );
          text = exact;
          break;
        }
        default:
          fail(field, "invalid_type", "must be a string, number or boolean");
      }
      if (text.length > L.propertyValueMaxLength)
        fail(field, "too_long", `must be at most ${L.propertyValueMaxLength} characters`);
      count++;
      chars += k.length + text.length;
      properties[k] = text;
    }
    if (count > L.maxProperties) fail("properties", "too_many", `at most ${L.maxProperties} properties`);
    if (chars > L.maxPropertyBytes)
      fail("properties", "too_large", `keys and values must total at most ${L.maxPropertyBytes} characters`);
  }

  const bytes = tally.v1.Event.encode({ id, type, customer, time, timeMs, properties, source }).finish();
  return { id, bytes };
}

/** Bytes of the `EventBatch` framing of one event: field 1, wire type 2, then the length varint. */
function headerLength(n: number): number {
  let len = 2;
  while (n >= 0x80) {
    n >>>= 7;
    len++;
  }
  return len;
}

/**
 * Concatenates encoded events into one encoded `tally.v1.EventBatch` (a repeated message field
 * is a sequence of `tag, length, bytes`), without re-encoding any event.
 */
export function encodeBatch(events: readonly EncodedEvent[]): Uint8Array {
  let total = 0;
  for (const e of events) total += headerLength(e.bytes.length) + e.bytes.length;
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  for (const e of events) {
    out[o++] = 0x0a;
    let n = e.bytes.length;
    while (n >= 0x80) {
      out[o++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    out[o++] = n;
    out.set(e.bytes, o);
    o += e.bytes.length;
  }
  return out;
}

/** Size on the wire of one event inside a batch. */
export function batchedSize(e: EncodedEvent): number {
  return headerLength(e.bytes.length) + e.bytes.length;
}

/** Decodes buffered events back to `TallyEvent`s, to hand them to `onError`. */
export function decodeEvents(events: readonly EncodedEvent[]): TallyEvent[] {
  return events.map(({ bytes }) => {
    const m = tally.v1.Event.decode(bytes);
    const out: TallyEvent = { id: m.id, type: m.type, customer: m.customer };
    out.time = m.time !== "" ? m.time : Number(m.timeMs);
    if (Object.keys(m.properties).length > 0) out.properties = { ...m.properties };
    if (m.source !== "") out.source = m.source;
    return out;
  });
}
