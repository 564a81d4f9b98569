import Big from "big.js";
import { decodeEvents } from "../../events/index.js";
import { ApiError, type FieldError } from "../../lib/errors.js";
import { fieldErrorsOf, type ErrorRenderer } from "../errors.js";
import type { IngestAdapter, MappedRequest } from "../ingest.js";
import { asObject, renamer } from "./mapping.js";
import { reasons } from "./openmeter.js";

/**
 * Lago ingest: `POST /api/v1/events` (`{ event: {...} }`) and `POST /api/v1/events/batch`
 * (`{ events: [...] }`).
 *
 * | Lago                                                  | Tally      |
 * | ----------------------------------------------------- | ---------- |
 * | transaction_id                                        | id         |
 * | external_subscription_id, else external_customer_id   | customer   |
 * | code                                                  | type       |
 * | timestamp (unix seconds, number or string, decimals)  | time       |
 * | properties (+ precise_total_amount_cents)             | properties |
 * | —                                                     | source = "lago" |
 */

/** Lago's error codes where one exists for the condition; Tally's code otherwise. */
function lagoCode(code: string): string {
  return code === "required" ? "value_is_mandatory" : code;
}

/**
 * Lago's error shapes: validation problems as `422 { status, error: "Unprocessable Entity",
 * code: "validation_errors", error_details }` (keyed by field, and by event index for batches),
 * everything else as `{ status, error, code, message }`.
 */
export function renderLagoError(batch: boolean): ErrorRenderer {
  return (c, err) => {
    const errors = fieldErrorsOf(err);
    if (err.code === "invalid_events" && errors.length > 0) {
      // Keyed by field names the client chose (`__proto__` included): objects without prototype.
      const details = Object.create(null) as Record<string, Record<string, string[]> | string[]>;
      for (const e of errors) {
        const field = e.field === "" ? "event" : e.field;
        let target: Record<string, string[]>;
        if (batch) {
          const key = String(e.index ?? 0);
          target =
            (details[key] as Record<string, string[]> | undefined) ??
            (Object.create(null) as Record<string, string[]>);
          details[key] = target;
        } else {
          target = details as Record<string, string[]>;
        }
        (target[field] ??= []).push(lagoCode(e.code));
      }
      return c.json(
        {
          status: 422,
          error: "Unprocessable Entity",
          code: "validation_errors",
          error_details: details,
          message: err.message,
        },
        422,
      );
    }
    return c.json(
      { status: err.status, error: reasons[err.status] ?? "Error", code: err.code, message: err.message },
      err.status,
    );
  };
}

/** Unix seconds (`1651240791`, `1651240791.123`, or the same as a string) → epoch ms, or null. */
export function lagoTimestampMs(v: unknown): number | null {
  let text: string;
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) return null;
    text = String(v);
  } else if (typeof v === "string" && /^\d+(\.\d+)?$/.test(v.trim())) {
    text = v.trim();
  } else {
    return null;
  }
  try {
    // Exact decimal arithmetic: 1651240791.123 s is 1651240791123 ms, not ...122.99999.
    const ms = new Big(text).times(1000).round(0, Big.roundDown).toNumber();
    return Number.isSafeInteger(ms) ? ms : null;
  } catch {
    return null;
  }
}

interface LagoMapped {
  raws: unknown[];
  errors: FieldError[];
  /** Event time in ms per event (undefined: receive time). */
  times: (number | undefined)[];
  /** Which field became the customer, per event (for error names). */
  customerField: string[];
}

function mapLagoEvents(events: unknown[]): LagoMapped {
  const errors: FieldError[] = [];
  const times: (number | undefined)[] = [];
  const customerField: string[] = [];
  const raws = events.map((ev, index) => {
    const e = asObject(ev);
    if (e === null) {
      errors.push({ index, field: "", code: "invalid_type", message: "an event must be a JSON object" });
      times.push(undefined);
      customerField.push("external_subscription_id");
      return null;
    }
    const useSubscription = e.external_subscription_id !== undefined && e.external_subscription_id !== null;
    customerField.push(useSubscription ? "external_subscription_id" : "external_customer_id");
    let time: number | undefined;
    if (e.timestamp !== undefined && e.timestamp !== null) {
      const ms = lagoTimestampMs(e.timestamp);
      if (ms === null) {
        errors.push({
          index,
          field: "timestamp",
          code: "invalid_format",
          message: "timestamp must be Unix seconds (an integer or decimal number, or such a string)",
        });
      } else {
        time = ms;
      }
    }
    times.push(time);
    let properties = e.properties;
    if (e.precise_total_amount_cents !== undefined && e.precise_total_amount_cents !== null) {
      // Without prototype, so a `__proto__` key of the client's properties stays a key.
      const merged = Object.create(null) as Record<string, unknown>;
      Object.assign(merged, asObject(e.properties) ?? {});
      merged.precise_total_amount_cents = e.precise_total_amount_cents;
      properties = merged;
    }
    return {
      id: e.transaction_id,
      customer: useSubscription ? e.external_subscription_id : e.external_customer_id,
      type: e.code,
      time,
      properties,
      source: "lago",
    };
  });
  return { raws, errors, times, customerField };
}

function renameFor(mapped: LagoMapped) {
  return (field: string, index: number) =>
    renamer(
      {
        id: "transaction_id",
        customer: mapped.customerField[index] ?? "external_subscription_id",
        type: "code",
        time: "timestamp",
        source: "source",
      },
      (key) => (key === null ? "properties" : `properties.${key}`),
    )(field, index);
}

/** The event object Lago answers with (`lago_*` ids are Lago's database ids; Tally has none). */
function echo(ev: unknown, timeMs: number, createdAt: string) {
  const e = asObject(ev) ?? {};
  return {
    lago_id: null,
    transaction_id: e.transaction_id,
    lago_customer_id: null,
    code: e.code,
    timestamp: new Date(timeMs).toISOString(),
    precise_total_amount_cents: e.precise_total_amount_cents ?? null,
    properties: e.properties ?? {},
    lago_subscription_id: null,
    external_subscription_id: e.external_subscription_id ?? null,
    ...(e.external_customer_id !== undefined ? { external_customer_id: e.external_customer_id } : {}),
    created_at: createdAt,
  };
}

/** Extracts the events of a Lago body: `{ event }` for one, `{ events: [...] }` for a batch. */
function lagoEvents(body: Uint8Array, batch: boolean, maxEvents: number): unknown[] {
  const [parsed] = decodeEvents(body, "json", { maxEvents });
  const envelope = asObject(parsed);
  if (batch) {
    const events = envelope?.events;
    if (!Array.isArray(events)) throw new ApiError("invalid_request", "body must be { events: [ ... ] }");
    return events;
  }
  if (envelope === null || asObject(envelope.event) === null) {
    throw new ApiError("invalid_request", "body must be { event: { ... } }");
  }
  return [envelope.event];
}

/** Lago's ingest: `{ event }` (or `{ events }` for the batch route) → 200 with the events echoed. */
export function lagoAdapter(batch: boolean): IngestAdapter {
  return {
    render: renderLagoError(batch),
    map({ body, nowMs, maxEvents }): MappedRequest {
      const events = lagoEvents(body, batch, maxEvents);
      const mapped = mapLagoEvents(events);
      // Events without a timestamp get the receive time here, so the answer shows the stored time.
      const raws = mapped.raws.map((r, i) => (r === null ? r : { ...r, time: mapped.times[i] ?? nowMs }));
      return {
        raws,
        errors: mapped.errors,
        rename: renameFor(mapped),
        answer: () => {
          const createdAt = new Date(nowMs).toISOString();
          const out = events.map((ev, i) => echo(ev, mapped.times[i] ?? nowMs, createdAt));
          return { status: 200, body: batch ? { events: out } : { event: out[0] } };
        },
      };
    },
  };
}

/**
 * True when a JSON body is a Lago envelope: an object whose first key is `event`, or that has
 * an `"event"` key and no CloudEvents `"specversion"`. Decided on the raw text (the caller is
 * already authenticated; this only picks the adapter).
 */
export function isLagoEnvelope(body: Uint8Array): boolean {
  const head = Buffer.from(body.subarray(0, 4096)).toString("utf8");
  if (/^\s*\{\s*"event"\s*:/.test(head)) return true;
  if (!/^\s*\{/.test(head)) return false;
  const text = body.length <= 4096 ? head : Buffer.from(body).toString("utf8");
  return /"event"\s*:/.test(text) && !/"specversion"\s*:/.test(text);
}
