import { createHash } from "node:crypto";
import type { Context } from "hono";
import { decodeEvents, eventLimits } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import type { EdgeEnv } from "../context.js";
import { fieldErrorsOf } from "../errors.js";
import type { IngestAdapter, MappedRequest } from "../ingest.js";
import { asObject, renamer } from "./mapping.js";

/**
 * OpenMeter ingest (`POST /api/v1/events`): CloudEvents 1.0 in structured JSON mode.
 *
 * | CloudEvents | Tally                                   |
 * | ----------- | --------------------------------------- |
 * | source, id  | id = {@link cloudEventId}(source, id)   |
 * | subject     | customer                                |
 * | type        | type                                    |
 * | time        | time                                    |
 * | data        | properties                              |
 * | source      | source                                  |
 */

/** HTTP reason phrases, the `title` of a problem document (and Lago's `error`). */
export const reasons: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/**
 * RFC 7807 problem details, as OpenMeter answers errors. The content type must be exactly
 * `application/problem+json`: the OpenMeter SDK compares it verbatim before reading the body.
 * `extra` adds extension members (RFC 7807 §3.2 lets a problem carry more members).
 */
export function renderOpenMeterError(
  c: Context<EdgeEnv>,
  err: ApiError,
  extra: Record<string, unknown> = {},
): Response {
  const errors = fieldErrorsOf(err);
  const problem = {
    type: "about:blank",
    title: reasons[err.status] ?? "Error",
    status: err.status,
    detail:
      errors.length > 0
        ? `${err.message}: ${errors
            .slice(0, 5)
            .map((e) => `${e.index === undefined ? "" : `[${e.index}] `}${e.field}: ${e.message}`)
            .join("; ")}`
        : err.message,
    instance: c.req.path,
    code: err.code,
    requestId: c.get("requestId"),
    ...(errors.length > 0 ? { errors } : {}),
    ...extra,
  };
  return c.body(JSON.stringify(problem), err.status, { "content-type": "application/problem+json" });
}

/** CloudEvents content types (`application/cloudevents+json`, `...-batch+json`). */
export function isCloudEventsContentType(contentType: string | undefined): boolean {
  return (contentType ?? "").toLowerCase().trimStart().startsWith("application/cloudevents");
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The Tally event id of a CloudEvent. CloudEvents ids are unique per `source` only (OpenMeter
 * deduplicates on source + id), and Tally deduplicates on the id alone, so the id is derived
 * from both, injectively:
 *
 * - `<n>:<source>:<id>`, `n` the length of `source` in UTF-16 code units (for ASCII, characters),
 *   when that fits the 256-character id limit, e.g. `11:billing-svc:42`;
 * - otherwise `sha256:` and the lowercase hex SHA-256 of the UTF-8 bytes of that same string.
 *
 * The length prefix makes the split unambiguous (`a:b` + `c` ≠ `a` + `b:c`), and the hashed form
 * cannot be mistaken for the other (`sha256` is not a number). Documented in docs/compat.md.
 */
export function cloudEventId(source: string, id: string): string {
  const composite = `${source.length}:${source}:${id}`;
  if (composite.length <= eventLimits.idMaxLength) return composite;
  return `sha256:${createHash("sha256").update(composite, "utf8").digest("hex")}`;
}

/** True when `v` may be part of a derived id: a string Tally's validator would accept. */
function derivable(v: unknown, maxLength: number): v is string {
  return typeof v === "string" && v !== "" && v.length <= maxLength && !loneSurrogate.test(v);
}

const rename = renamer(
  { id: "id", customer: "subject", type: "type", time: "time", source: "source" },
  (key) => (key === null ? "data" : `data.${key}`),
);

/** Maps CloudEvents onto Tally raw events; CloudEvents-level problems are reported here. */
export function mapCloudEvents(events: unknown[]): { raws: unknown[]; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const raws = events.map((ev, index) => {
    const e = asObject(ev);
    if (e === null) {
      errors.push({ index, field: "", code: "invalid_type", message: "a CloudEvent must be a JSON object" });
      return null;
    }
    if (e.specversion !== "1.0") {
      errors.push({
        index,
        field: "specversion",
        code: e.specversion === undefined ? "required" : "invalid_format",
        message: 'specversion must be "1.0"',
      });
    }
    if (typeof e.source !== "string" || e.source === "") {
      errors.push({ index, field: "source", code: "required", message: "source is required" });
    }
    if (e.datacontenttype !== undefined && e.datacontenttype !== null) {
      const dct =
        typeof e.datacontenttype === "string" ? e.datacontenttype.split(";")[0]!.trim().toLowerCase() : "";
      if (dct !== "application/json") {
        errors.push({
          index,
          field: "datacontenttype",
          code: "invalid_format",
          message: "only application/json data is supported",
        });
      }
    }
    // An id or source Tally would reject is passed on as it is, so the validator names it.
    const id =
      derivable(e.id, eventLimits.idMaxLength) && derivable(e.source, eventLimits.sourceMaxLength)
        ? cloudEventId(e.source, e.id)
        : e.id;
    return { id, customer: e.subject, type: e.type, time: e.time, source: e.source, properties: e.data };
  });
  return { raws, errors };
}

function firstNonSpace(body: Uint8Array): number | undefined {
  for (const b of body) if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return b;
  return undefined;
}

/** OpenMeter's ingest: `204 No Content` once every event is published. */
export const openMeterAdapter: IngestAdapter = {
  render: (c, err) => renderOpenMeterError(c, err),
  map({ body, contentType, maxEvents }): MappedRequest {
    const mime = (contentType ?? "application/json").split(";")[0]!.trim().toLowerCase();
    if (
      mime !== "application/cloudevents+json" &&
      mime !== "application/cloudevents-batch+json" &&
      mime !== "application/json"
    ) {
      throw new ApiError(
        "unsupported_media_type",
        `Content-Type ${mime} is not supported; use application/cloudevents+json, application/cloudevents-batch+json or application/json`,
      );
    }
    const events = decodeEvents(body, "json", { maxEvents });
    const isArray = firstNonSpace(body) === 0x5b; // "["
    if (mime === "application/cloudevents+json" && isArray) {
      throw new ApiError(
        "invalid_request",
        "application/cloudevents+json holds one event; send arrays as application/cloudevents-batch+json",
      );
    }
    if (mime === "application/cloudevents-batch+json" && !isArray) {
      throw new ApiError(
        "invalid_request",
        "application/cloudevents-batch+json must be a JSON array of events",
      );
    }
    return { ...mapCloudEvents(events), rename, answer: () => ({ status: 204 }) };
  },
};
