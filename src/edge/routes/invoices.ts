import type { Hono } from "hono";
import { z } from "zod";
import { isDocumentId, upcomingInvoice, type InvoiceIndex, type InvoiceStore } from "../../billing/index.js";
import type { PushStore } from "../../connectors/stripe/index.js";
import { ApiError } from "../../lib/errors.js";
import { listEvidence, queryEvidence } from "../../usage/index.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import { closeDepsOf } from "../close-deps.js";
import type { EdgeEnv } from "../context.js";
import { decodeCursor, encodeCursor, parseWith, timeParam } from "../params.js";

/** The invoice store and its listing index, as the edge holds them. */
export interface EdgeInvoices {
  store: InvoiceStore;
  index: InvoiceIndex;
  /** Push records (Stripe): shown on each invoice, written by the Stripe webhook. */
  push?: PushStore;
}

/**
 * The `push` field of an invoice as the API shows it: the Stripe push record (status, Stripe
 * invoice ids, last error) and payment states from Stripe's webhooks. Kept outside the invoice
 * record, which never changes once finalized.
 */
export async function pushView(push: PushStore | undefined, id: string): Promise<Record<string, unknown>> {
  if (push === undefined) return {};
  const [rec, pay] = await Promise.all([push.get(id), push.payments(id)]);
  if (rec === null && pay === null) return { stripe: null };
  const payments = Object.entries(pay?.parts ?? {}).map(([stripe_invoice, p]) => ({
    stripe_invoice,
    part: p.part,
    status: p.status,
    event: p.event,
    event_created: p.event_created,
  }));
  return {
    stripe: {
      status: rec?.status ?? "pending",
      step: rec?.step ?? "none",
      invoice_ids: rec?.parts.map((p) => p.stripe_invoice).filter((x) => x !== null) ?? [],
      parts: rec?.parts ?? [],
      stripe_customer: rec?.stripe_customer ?? null,
      attempts: rec?.attempts ?? 0,
      last_error: rec?.last_error ?? null,
      next_attempt_at: rec?.next_attempt_at ?? null,
      skip_reason: rec?.skip_reason ?? null,
      pushed_at: rec?.pushed_at ?? null,
      payments,
    },
  };
}

const listQuery = z
  .object({
    customer: z.string().min(1).max(256).optional(),
    status: z.enum(["draft", "finalized"]).optional(),
    kind: z.enum(["invoice", "credit_note"]).optional(),
    period_start: timeParam.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().max(2000).optional(),
  })
  .strict();

const cursorSchema = z.object({ period_start: z.string(), id: z.string() }).strict();

const eventsQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(10_000).default(1000),
    cursor: z.string().max(2000).optional(),
  })
  .strict();

/** Invoices (scope `read`): list with filters and cursor pagination, and one invoice with its lines. */
export function mountInvoiceRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps, invoices: EdgeInvoices): void {
  app.get("/v1/invoices", requireScope(deps.keys, "read"), (c) => {
    const q = parseWith(listQuery, c.req.query());
    const after = q.cursor === undefined ? undefined : decodeCursor(cursorSchema, q.cursor);
    const page = invoices.index.list(
      {
        customer: q.customer,
        kind: q.kind,
        status: q.status,
        periodStart: q.period_start === undefined ? undefined : new Date(q.period_start).toISOString(),
      },
      q.limit,
      after,
    );
    return c.json({
      data: page.data,
      next_cursor: page.next ? encodeCursor(page.next) : null,
    });
  });

  app.get("/v1/invoices/:id", requireScope(deps.keys, "read"), async (c) => {
    const id = c.req.param("id");
    const inv = isDocumentId(id) ? await invoices.store.get(id) : null;
    if (inv === null) throw new ApiError("not_found", `no invoice ${JSON.stringify(id)}`);
    return c.json({ ...inv, push: await pushView(invoices.push, id) });
  });

  /**
   * The events behind one invoice line (its usage snapshot): the meter version, customer,
   * service period and receive cutoff the line was computed from, read again, with the event
   * count and id digest over all of them, so anyone can check the line: the digest is
   * recomputable from the listed ids (README "Invoices"). Paged by id.
   */
  app.get("/v1/invoices/:id/lines/:n/events", requireScope(deps.keys, "read"), async (c) => {
    const id = c.req.param("id");
    const inv = isDocumentId(id) ? await invoices.store.get(id) : null;
    if (inv === null) throw new ApiError("not_found", `no invoice ${JSON.stringify(id)}`);
    const n = Number(c.req.param("n"));
    const line = inv.lines.find((l) => l.number === n);
    if (line === undefined) throw new ApiError("not_found", `invoice ${id} has no line ${c.req.param("n")}`);
    const snap = line.snapshot;
    if (snap === undefined) {
      throw new ApiError("invalid_request", `line ${n} is not a usage line; it has no events`, {
        errors: [{ field: "n", code: "invalid", message: "not a usage line" }],
      });
    }
    const q = parseWith(eventsQuery, c.req.query());
    const after = q.cursor === undefined ? undefined : decodeCursor(z.string(), q.cursor);
    const meter = await deps.catalog.meters.version(snap.meter, snap.meter_version);
    if (meter === undefined)
      throw new ApiError("not_found", `meter ${snap.meter} version ${snap.meter_version} is gone`);
    const req = {
      meter,
      customer: inv.customer,
      fromMs: Date.parse(line.period.start),
      toMs: Date.parse(line.period.end),
      receivedUpToMs: Date.parse(snap.cutoff),
    };
    const [evidence, events] = await Promise.all([
      queryEvidence(deps.usage, req),
      listEvidence(deps.usage, req, after, q.limit),
    ]);
    const total = evidence.get(inv.customer) ?? { eventCount: 0, idDigest: "0".repeat(32) };
    const last = events.length === q.limit ? events.at(-1) : undefined;
    return c.json({
      invoice: inv.id,
      line: n,
      meter: snap.meter,
      meter_version: snap.meter_version,
      period: line.period,
      cutoff: snap.cutoff,
      event_count: total.eventCount,
      id_digest: total.idDigest,
      matches_line: total.eventCount === snap.event_count && total.idDigest === snap.id_digest,
      data: events,
      next_cursor: last ? encodeCursor(last.id) : null,
    });
  });

  /**
   * The current period of each of the customer's active subscriptions priced live with the
   * close's own path (usage so far, rating, pending true-ups); nothing is stored.
   */
  app.get("/v1/customers/:key/upcoming-invoice", requireScope(deps.keys, "read"), async (c) => {
    const key = c.req.param("key");
    if (deps.catalog.customers.get(key) === undefined)
      throw new ApiError("not_found", `no customer ${JSON.stringify(key)}`);
    const closeDeps = closeDepsOf(deps);
    const nowMs = (deps.now ?? Date.now)();
    const watermark = await deps.watermarks.current();
    const data = [];
    for (const sub of deps.catalog.subscriptions.list()) {
      if (sub.customer !== key) continue;
      const inv = await upcomingInvoice(closeDeps, sub.key, nowMs);
      if (inv !== null) data.push({ ...inv, status: "upcoming" as const });
    }
    return c.json({
      customer: key,
      as_of: new Date(nowMs).toISOString(),
      watermark: new Date(watermark).toISOString(),
      data,
    });
  });
}
