import { gunzipSync } from "node:zlib";
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

/**
 * Decodes a request body into raw (unvalidated) events. Syntax errors are reported per line
 * for NDJSON (so a client can find the bad line) and for the whole body otherwise.
 */
export function decodeEvents(body: Uint8Array, format: BodyFormat): unknown[] {
  switch (format) {
    case "json": {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text(body));
      } catch (err: unknown) {
        throw new ApiError("invalid_request", `body is not valid JSON: ${(err as Error).message}`);
      }
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
          out.push(JSON.parse(line));
        } catch {
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
