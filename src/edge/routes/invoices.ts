import type { Hono } from "hono";
import { z } from "zod";
import type { InvoiceIndex, InvoiceStore } from "../../billing/index.js";
import { ApiError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import type { EdgeEnv } from "../context.js";
import { parseWith, timeParam } from "../params.js";

/** The invoice store and its listing index, as the edge holds them. */
export interface EdgeInvoices {
  store: InvoiceStore;
  index: InvoiceIndex;
}

const listQuery = z
  .object({
    customer: z.string().min(1).max(256).optional(),
    status: z.enum(["draft", "finalized"]).optional(),
    period_start: timeParam.optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().max(2000).optional(),
  })
  .strict();

const cursorSchema = z.object({ period_start: z.string(), id: z.string() }).strict();

/** Invoices (scope `read`): list with filters and cursor pagination, and one invoice with its lines. */
export function mountInvoiceRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps, invoices: EdgeInvoices): void {
  app.get("/v1/invoices", requireScope(deps.keys, "read"), (c) => {
    const q = parseWith(listQuery, c.req.query());
    let after: z.infer<typeof cursorSchema> | undefined;
    if (q.cursor !== undefined) {
      try {
        after = cursorSchema.parse(JSON.parse(Buffer.from(q.cursor, "base64url").toString("utf8")));
      } catch {
        throw new ApiError("invalid_request", "cursor: not a cursor returned by this API", {
          errors: [{ field: "cursor", code: "invalid", message: "not a cursor returned by this API" }],
        });
      }
    }
    const page = invoices.index.list(
      {
        customer: q.customer,
        status: q.status,
        periodStart: q.period_start === undefined ? undefined : new Date(q.period_start).toISOString(),
      },
      q.limit,
      after,
    );
    return c.json({
      data: page.data,
      next_cursor: page.next ? Buffer.from(JSON.stringify(page.next)).toString("base64url") : null,
    });
  });

  app.get("/v1/invoices/:id", requireScope(deps.keys, "read"), async (c) => {
    const id = c.req.param("id");
    const inv = /^inv_[0-9a-f]{24}$/.test(id) ? await invoices.store.get(id) : null;
    if (inv === null) throw new ApiError("not_found", `no invoice ${JSON.stringify(id)}`);
    return c.json(inv);
  });
}
