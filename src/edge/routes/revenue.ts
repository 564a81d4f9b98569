import type { Hono } from "hono";
import { z } from "zod";
import {
  lastDayOf,
  loadRevenueInputs,
  monthPattern,
  revenueReport,
  type JournalStore,
} from "../../accounting/index.js";
import type { Accounts } from "../../catalog/index.js";
import { ApiError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import type { EdgeEnv } from "../context.js";
import { parseWith } from "../params.js";

const monthQuery = z
  .object({ month: z.string().regex(monthPattern, "must be a calendar month YYYY-MM, e.g. 2026-11") })
  .strict();

/** The journal and the chart, or the 409 of an installation without a catalog `accounts:` section. */
function configured(deps: EdgeDeps): { journal: JournalStore; chart: Accounts } {
  const chart = deps.catalog.chart();
  if (chart === undefined || deps.journal === undefined) {
    throw new ApiError(
      "not_configured",
      "accounts are not configured: apply a catalog with an accounts: section (see src/accounting/README.md)",
    );
  }
  return { journal: deps.journal, chart };
}

/**
 * Revenue and the journal (scope `admin`: finance data across customers):
 * `GET /v1/revenue?month=YYYY-MM` (recognized, posted, billed and deferred revenue per currency
 * and account, from the posted journal) and `GET /v1/journals?month=YYYY-MM` (the entries dated
 * in the month).
 */
export function mountRevenueRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  app.get("/v1/revenue", requireScope(deps.keys, "admin"), async (c) => {
    const { month } = parseWith(monthQuery, c.req.query());
    const { journal, chart } = configured(deps);
    const tz = deps.config.accounting.timezone;
    return c.json(revenueReport(month, tz, chart, await loadRevenueInputs(journal, month)));
  });
  app.get("/v1/journals", requireScope(deps.keys, "admin"), async (c) => {
    const { month } = parseWith(monthQuery, c.req.query());
    const { journal } = configured(deps);
    return c.json({ month, data: await journal.list({ from: `${month}-01`, to: lastDayOf(month) }) });
  });
}
