import type { Context } from "hono";
import { decodeEvents } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import type { EdgeEnv } from "../context.js";
import { asObject, authorize, fieldErrors, ingest, renamer, type MappedBatch } from "./pipeline.js";

/**
 * OpenMeter ingest (`POST /api/v1/events`): CloudEvents 1.0 in structured JSON mode.
 *
 * | CloudEvents | Tally      |
 * | ----------- | ---------- |
 * | id          | id         |
 * | subject     | customer   |
 * | type        | type       |
 * | time        | time       |
 * | data        | properties |
 * | source      | source     |
 */

const reasons: Record<number, string> = {
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
 */
export function renderOpenMeterError(c: Context<EdgeEnv>, err: ApiError): Response {
  const errors = fieldErrors(err);
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
  };
  return c.body(JSON.stringify(problem), err.status, { "content-type": "application/problem+json" });
}

/** CloudEvents content types, and plain JSON (a single event or an array). */
export function isCloudEventsContentType(contentType: string | undefined): boolean {
  return (contentType ?? "").toLowerCase().trimStart().startsWith("application/cloudevents");
}

const rename = renamer(
  { id: "id", customer: "subject", type: "type", time: "time", source: "source" },
  (key) => (key === null ? "data" : `data.${key}`),
);

/** Maps CloudEvents onto Tally raw events; CloudEvents-level problems are reported here. */
export function mapCloudEvents(events: unknown[]): MappedBatch {
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
    return {
      id: e.id,
      customer: e.subject,
      type: e.type,
      time: e.time,
      source: e.source,
      properties: e.data,
    };
  });
  return { raws, errors };
}

function firstNonSpace(body: Uint8Array): number | undefined {
  for (const b of body) if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return b;
  return undefined;
}

/** Handles an OpenMeter request whose body was already read and decoded. */
export async function handleOpenMeter(
  deps: EdgeDeps,
  c: Context<EdgeEnv>,
  body: Uint8Array,
): Promise<Response> {
  await authorize(deps, c);
  const mime = (c.req.header("content-type") ?? "application/json").split(";")[0]!.trim().toLowerCase();
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
  const events = decodeEvents(body, "json");
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
  await ingest(deps, mapCloudEvents(events), rename);
  return c.body(null, 204);
}
