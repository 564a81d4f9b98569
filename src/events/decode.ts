import { gunzipSync } from "node:zlib";
import Big from "big.js";
import protobuf from "protobufjs/minimal.js";
import { tally } from "../gen/proto.js";
import { ApiError, type FieldError } from "../lib/errors.js";

/** Body formats accepted by `POST /v1/events`. */
export type BodyFormat = "json" | "ndjson" | "protobuf";

/** Maps a Content-Type header to a body format, or throws 415. */
export function bodyFormat(contentType: string | undefined): BodyFormat {
  // The header as nearly every client sends it, without the split/trim/lowercase copies.
  if (contentType === undefined || contentType === "application/json") return "json";
  const mime = (contentType ?? "application/json").split(";")[0]!.trim().toLowerCase();
  switch (mime) {
    case "application/json":
    case "":
      return "json";
    case "application/x-ndjson":
    case "application/ndjson":
    case "application/jsonl":
      return "ndjson";
    case "application/x-protobuf":
    case "application/protobuf":
      return "protobuf";
    default:
      throw new ApiError(
        "unsupported_media_type",
        `Content-Type ${mime} is not supported; use application/json, application/x-ndjson or application/x-protobuf`,
      );
  }
}

/** Undoes Content-Encoding (identity or gzip), bounding the decompressed size. */
export function decodeContent(body: Uint8Array, encoding: string | undefined, maxBytes: number): Uint8Array {
  const enc = (encoding ?? "identity").trim().toLowerCase();
  if (enc === "identity" || enc === "") return body;
  if (enc !== "gzip") {
    throw new ApiError(
      "unsupported_media_type",
      `Content-Encoding ${enc} is not supported; use gzip or identity`,
    );
  }
  try {
    return gunzipSync(body, { maxOutputLength: maxBytes });
  } catch (err: unknown) {
    if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ApiError("payload_too_large", `decompressed body exceeds ${maxBytes} bytes`);
    }
    throw new ApiError("invalid_request", "body is not valid gzip");
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function text(body: Uint8Array): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new ApiError("invalid_request", "body is not valid UTF-8");
  }
}

function isDigitOrDot(c: number): boolean {
  return (c >= 48 && c <= 57) || c === 46;
}

/**
 * True when `text` holds a run of 16 or more digits and dots (`/[0-9.]{16,}/`): only such a run
 * may hold a number JSON.parse cannot represent exactly. Every 16 consecutive characters hold
 * exactly one position checked here (one in 16), so a run that long cannot be missed; a hit
 * is measured both ways. 2.7 times faster than the regex on ordinary bodies, where the regex
 * was 5 % of the edge's CPU.
 */
export function hasLongNumberRun(text: string): boolean {
  const n = text.length;
  for (let i = 15; i < n; i += 16) {
    if (!isDigitOrDot(text.charCodeAt(i))) continue;
    let start = i;
    while (start > 0 && isDigitOrDot(text.charCodeAt(start - 1))) start--;
    let end = i + 1;
    while (end < n && isDigitOrDot(text.charCodeAt(end))) end++;
    if (end - start >= 16) return true;
    // The next run starts after `end`; checking end - 1 + 16k keeps one position in every 16.
    i = end - 1;
  }
  return false;
}

/** A JSON number literal that JSON.parse would round, and where it is. */
export interface InexactNumber {
  /** Character offset of the literal in the scanned text. */
  offset: number;
  literal: string;
  /** Keys and array indexes from the scanned value's root down to the literal. */
  path: (string | number)[];
}

/** One open object or array while scanning JSON text. */
interface Frame {
  array: boolean;
  /** Array: index of the current element. */
  index: number;
  /** Object: offsets of the current key's quoted text (decoded only when a path is needed). */
  keyStart: number;
  keyEnd: number;
  expectKey: boolean;
}

function isNumberChar(c: number): boolean {
  // 0-9 . e E + -
  return (c >= 48 && c <= 57) || c === 46 || c === 101 || c === 69 || c === 43 || c === 45;
}

/**
 * JSON.parse rounds numbers to binary doubles and hides that it did. Finds numeric literals
 * (outside strings) whose value is not exactly the double they parse to, so a quantity such as
 * `1.00000000000000001234` is rejected instead of silently becoming `1`, and says where each is
 * (so the error can name the event and field). A cheap regex keeps ordinary bodies on the fast
 * path; only suspicious ones are scanned. The text must be valid JSON (parse it first).
 */
export function inexactNumbers(json: string): InexactNumber[] {
  if (!hasLongNumberRun(json)) return [];
  const found: InexactNumber[] = [];
  const stack: Frame[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 34) {
      let j = i + 1;
      for (; j < json.length; j++) {
        const d = json.charCodeAt(j);
        if (d === 92)
          j++; // backslash escape
        else if (d === 34) break;
      }
      const top = stack[stack.length - 1];
      if (top !== undefined && top.expectKey) {
        top.keyStart = i;
        top.keyEnd = j + 1;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 123 || c === 91) {
      stack.push({ array: c === 91, index: 0, keyStart: 0, keyEnd: 0, expectKey: c === 123 });
    } else if (c === 125 || c === 93) {
      stack.pop();
    } else if (c === 44) {
      const top = stack[stack.length - 1];
      if (top !== undefined) {
        if (top.array) top.index++;
        else top.expectKey = true;
      }
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      let j = i + 1;
      while (j < json.length && isNumberChar(json.charCodeAt(j))) j++;
      const literal = json.slice(i, j);
      const n = Number(literal);
      let exact = true;
      try {
        exact = Number.isFinite(n) && new Big(literal).eq(new Big(n));
      } catch {
        // not a number literal; JSON.parse reports the syntax error
      }
      if (!exact) {
        const path = stack.map((f) =>
          f.array ? f.index : (JSON.parse(json.slice(f.keyStart, f.keyEnd)) as string),
        );
        found.push({ offset: i, literal, path });
      }
      i = j - 1;
    }
  }
  return found;
}

/** `properties.list[2]`: dotted keys, array indexes in brackets. */
function fieldName(path: readonly (string | number)[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? p : `.${p}`;
  }
  return out;
}

/**
 * Field errors for the imprecise numbers in one JSON text. `index` is the event's index when
 * the text is one event (an NDJSON line); when it is undefined the text is a whole body, and an
 * array's elements are the events.
 */
function imprecise(json: string, index: number | undefined): FieldError[] {
  const found = inexactNumbers(json);
  if (found.length === 0) return [];
  const bodyIsArray = index === undefined && json.trimStart().startsWith("[");
  return found.map(({ literal, path }) => {
    let i = index ?? 0;
    let rest = path;
    if (bodyIsArray) {
      i = typeof path[0] === "number" ? path[0] : 0;
      rest = path.slice(1);
    }
    const field = fieldName(rest);
    return {
      index: i,
      field,
      code: "imprecise_number",
      message: `${field === "" ? "number" : field}: ${literal.slice(0, 64)} cannot be represented exactly as a JSON number; send it as a decimal string`,
    };
  });
}

/** At most this many field errors are listed in one answer (`truncated` says when more). */
const maxListedErrors = 1000;

/** The one shape of `invalid_events`: `{ invalid, errors: [{ index, field, code, message }] }`. */
function invalidEvents(errors: FieldError[], total: number): ApiError {
  const invalid = new Set(errors.map((e) => e.index)).size;
  return new ApiError("invalid_events", `${invalid} of ${total} events are invalid; nothing was accepted`, {
    invalid,
    errors: errors.slice(0, maxListedErrors),
    truncated: errors.length > maxListedErrors,
  });
}

function tooMany(max: number, got: number): ApiError {
  return new ApiError("payload_too_large", `at most ${max} events per request (got ${got})`);
}

/** Characters String.prototype.trim removes (ECMAScript WhiteSpace and LineTerminator). */
function isTrimmed(c: number): boolean {
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** Non-blank NDJSON lines (the events), counted without splitting the text. */
function countLines(text: string): number {
  let n = 0;
  let blank = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) {
      if (!blank) n++;
      blank = true;
    } else if (blank && !isTrimmed(c)) {
      blank = false;
    }
  }
  return blank ? n : n + 1;
}

/**
 * Top-level `events` fields (number 1) of an encoded `tally.v1.EventBatch`, counted by walking
 * the wire format (tag, skip) without decoding any event.
 */
function countProtobufEvents(body: Uint8Array): number {
  const reader = protobuf.Reader.create(body);
  let n = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 1) n++;
    reader.skipType(tag & 7, 0, tag >>> 3);
  }
  return n;
}

/** Options of {@link decodeEvents}. */
export interface DecodeOptions {
  /**
   * Refuse (`payload_too_large`) a body holding more events than this. NDJSON lines and
   * protobuf events are counted before any event is materialised, so a body of millions of
   * tiny events costs a scan, not millions of objects.
   * @default no limit
   */
  maxEvents?: number;
}

/**
 * Decodes a request body into raw (unvalidated) events. Syntax errors are reported per line
 * for NDJSON (so a client can find the bad line) and for the whole body otherwise. Every
 * `invalid_events` it throws has `details = { invalid, errors: [{ index, field, code, message }] }`.
 */
export function decodeEvents(body: Uint8Array, format: BodyFormat, opts: DecodeOptions = {}): unknown[] {
  const max = opts.maxEvents;
  switch (format) {
    case "json": {
      let parsed: unknown;
      const json = text(body);
      try {
        parsed = JSON.parse(json);
      } catch (err: unknown) {
        throw new ApiError("invalid_request", `body is not valid JSON: ${(err as Error).message}`);
      }
      const events = Array.isArray(parsed) ? parsed : [parsed];
      if (max !== undefined && events.length > max) throw tooMany(max, events.length);
      const errors = imprecise(json, undefined);
      if (errors.length > 0) throw invalidEvents(errors, events.length);
      return events;
    }
    case "ndjson": {
      const all = text(body);
      if (max !== undefined) {
        const n = countLines(all);
        if (n > max) throw tooMany(max, n);
      }
      const lines = all.split("\n");
      const out: unknown[] = [];
      const errors: FieldError[] = [];
      let index = 0;
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!.trim();
        if (line === "") continue;
        try {
          out.push(JSON.parse(line));
          for (const e of imprecise(line, index)) errors.push(e);
        } catch {
          errors.push({
            index,
            field: "",
            code: "invalid_json",
            message: `line ${i + 1} is not valid JSON`,
          });
        }
        index++;
      }
      if (errors.length > 0) throw invalidEvents(errors, index);
      return out;
    }
    case "protobuf": {
      let batch: tally.v1.EventBatch;
      try {
        if (max !== undefined) {
          const n = countProtobufEvents(body);
          if (n > max) throw tooMany(max, n);
        }
        batch = tally.v1.EventBatch.decode(body);
      } catch (err: unknown) {
        if (err instanceof ApiError) throw err;
        throw new ApiError(
          "invalid_request",
          `body is not a valid tally.v1.EventBatch: ${(err as Error).message}`,
        );
      }
      return batch.events.map((e) => ({
        id: e.id,
        type: e.type,
        customer: e.customer,
        time: e.time !== "" && e.time != null ? e.time : protoTimeMs(e.timeMs),
        properties: e.properties,
        source: e.source === "" ? undefined : e.source,
      }));
    }
  }
}

/**
 * `time_ms` as a number, or undefined when it is 0 ("not set" in proto3: the receive time is
 * used). protobufjs gives int64 as a `Long` object when the long package is installed, and a
 * `Long` is truthy even when it is zero, so compare the value, not the object.
 */
function protoTimeMs(v: number | Long | null | undefined): number | undefined {
  if (v === null || v === undefined) return undefined;
  const n = typeof v === "number" ? v : v.toNumber();
  return n === 0 ? undefined : n;
}
