import { gunzipSync } from "node:zlib";
import Big from "big.js";
import { tally } from "../gen/proto.js";
import { ApiError, type FieldError } from "../lib/errors.js";

/** Body formats accepted by `POST /v1/events`. */
export type BodyFormat = "json" | "ndjson" | "protobuf";

/** Maps a Content-Type header to a body format, or throws 415. */
export function bodyFormat(contentType: string | undefined): BodyFormat {
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

/** Runs of digits and dots this long may hold a number JSON.parse cannot represent exactly. */
const longNumberHint = /[0-9.]{16,}/;

/**
 * JSON.parse rounds numbers to binary doubles and hides that it did. Finds numeric literals
 * (outside strings) whose value is not exactly the double they parse to, so a quantity such as
 * `1.00000000000000001234` is rejected instead of silently becoming `1`. A cheap regex keeps
 * ordinary bodies on the fast path; only suspicious ones are scanned.
 */
export function inexactNumbers(json: string): { offset: number; literal: string }[] {
  if (!longNumberHint.test(json)) return [];
  const found: { offset: number; literal: string }[] = [];
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i++; // backslash escape
      else if (c === 34) inString = false;
      continue;
    }
    if (c === 34) {
      inString = true;
      continue;
    }
    if (c === 45 || (c >= 48 && c <= 57)) {
      let j = i + 1;
      while (j < json.length && /[0-9eE.+-]/.test(json[j]!)) j++;
      const literal = json.slice(i, j);
      const n = Number(literal);
      try {
        if (!Number.isFinite(n) || !new Big(literal).eq(new Big(n))) found.push({ offset: i, literal });
      } catch {
        // not a number literal; JSON.parse reports the syntax error
      }
      i = j - 1;
    }
  }
  return found;
}

function rejectInexact(json: string, index: number | undefined): void {
  const bad = inexactNumbers(json);
  if (bad.length === 0) return;
  throw new ApiError(
    "invalid_events",
    "body holds JSON numbers that cannot be represented exactly; send such quantities as decimal strings; nothing was accepted",
    bad.slice(0, 100).map((b) => ({
      ...(index === undefined ? {} : { index }),
      field: "",
      code: "imprecise_number",
      message: `number ${b.literal.slice(0, 64)} at character ${b.offset} would lose precision; send it as a string`,
    })),
  );
}

/**
 * Decodes a request body into raw (unvalidated) events. Syntax errors are reported per line
 * for NDJSON (so a client can find the bad line) and for the whole body otherwise.
 */
export function decodeEvents(
  body: Uint8Array,
  format: BodyFormat,
  _opts?: { maxEvents?: number },
): unknown[] {
  switch (format) {
    case "json": {
      let parsed: unknown;
      const json = text(body);
      try {
        parsed = JSON.parse(json);
      } catch (err: unknown) {
        throw new ApiError("invalid_request", `body is not valid JSON: ${(err as Error).message}`);
      }
      rejectInexact(json, undefined);
      return Array.isArray(parsed) ? parsed : [parsed];
    }
    case "ndjson": {
      const lines = text(body).split("\n");
      const out: unknown[] = [];
      const errors: FieldError[] = [];
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!.trim();
        if (line === "") continue;
        try {
          const value: unknown = JSON.parse(line);
          rejectInexact(line, out.length + errors.length);
          out.push(value);
        } catch (err: unknown) {
          if (err instanceof ApiError) throw err;
          errors.push({
            index: out.length + errors.length,
            field: "",
            code: "invalid_json",
            message: `line ${i + 1} is not valid JSON`,
          });
        }
      }
      if (errors.length > 0)
        throw new ApiError(
          "invalid_events",
          `${errors.length} line(s) are not valid JSON; nothing was accepted`,
          errors,
        );
      return out;
    }
    case "protobuf": {
      let batch: tally.v1.EventBatch;
      try {
        batch = tally.v1.EventBatch.decode(body);
      } catch (err: unknown) {
        throw new ApiError(
          "invalid_request",
          `body is not a valid tally.v1.EventBatch: ${(err as Error).message}`,
        );
      }
      return batch.events.map((e) => ({
        id: e.id,
        type: e.type,
        customer: e.customer,
        time: e.time !== "" && e.time != null ? e.time : e.timeMs ? Number(e.timeMs) : undefined,
        properties: e.properties,
        source: e.source === "" ? undefined : e.source,
      }));
    }
  }
}
