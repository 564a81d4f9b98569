import type { Hono } from "hono";
import { z } from "zod";
import { queryRows, sql } from "../../clickhouse/index.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import type { EdgeEnv } from "../context.js";
import { decodeCursor, encodeCursor, parseWith, timeParam } from "../params.js";

const filterQuery = z.object({
  customer: z.string().min(1).max(256).optional(),
  type: z.string().min(1).max(128).optional(),
  from: timeParam.optional(),
  to: timeParam.optional(),
});

const listQuery = filterQuery.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(2000).optional(),
});

const cursorSchema = z.object({ ts: z.number().int(), id: z.string() });

/** The event debugger: `GET /v1/events` (newest first, cursor pages) and `GET /v1/events/count`. */
export function mountEventRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const { keys, clickhouse, watermarks } = deps;
  const db = deps.config.clickhouse.database;

  app.get("/v1/events", requireScope(keys, "read"), async (c) => {
    const q = parseWith(listQuery, c.req.query());
    const after = q.cursor === undefined ? undefined : decodeCursor(cursorSchema, q.cursor);
    const { watermarkMs: watermark, deadLetterPendingEvents } = await watermarks.status();
    const rows = await queryRows<EventRow>(
      clickhouse,
      sql.listEvents(db, { customer: q.customer, type: q.type, fromMs: q.from, toMs: q.to }, q.limit, after),
    );
    const last = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return c.json({
      data: rows.map(toApiEvent),
      next_cursor: last ? encodeCursor({ ts: Number(last.ts_ms), id: last.id }) : null,
      watermark: new Date(watermark).toISOString(),
      dead_letter_pending: deadLetterPendingEvents,
    });
  });

  app.get("/v1/events/count", requireScope(keys, "read"), async (c) => {
    const q = parseWith(filterQuery, c.req.query());
    const { watermarkMs: watermark, deadLetterPendingEvents } = await watermarks.status();
    const rows = await queryRows<{ count: string }>(
      clickhouse,
      sql.countEvents(db, { customer: q.customer, type: q.type, fromMs: q.from, toMs: q.to }),
    );
    return c.json({
      count: Number(rows[0]?.count ?? 0),
      watermark: new Date(watermark).toISOString(),
      dead_letter_pending: deadLetterPendingEvents,
    });
  });
}

interface EventRow {
  id: string;
  type: string;
  customer: string;
  ts_ms: string;
  received_ms: string;
  source: string;
  prop_keys: string[];
  prop_values: string[];
}

function toApiEvent(r: EventRow) {
  // Without prototype: on `{}`, a property named `__proto__` would set the prototype and vanish
  // from the answer; `constructor` and `prototype` are plain keys either way.
  const properties = Object.create(null) as Record<string, string>;
  r.prop_keys.forEach((k, i) => (properties[k] = r.prop_values[i] ?? ""));
  return {
    id: r.id,
    type: r.type,
    customer: r.customer,
    time: new Date(Number(r.ts_ms)).toISOString(),
    received_at: new Date(Number(r.received_ms)).toISOString(),
    source: r.source === "" ? null : r.source,
    properties,
  };
}
