import { randomUUID } from "node:crypto";
import Big from "big.js";
import type { Clock } from "../stripe-server/ids.js";
import { badRequest, problem, validationException, XeroHttpError } from "./errors.js";
import type { JournalLineRec, ManualJournalRec, State } from "./state.js";
import { compileWhere } from "./where.js";
import { msDate, renderAccount, renderJournal } from "./wire.js";

export interface RouteCtx {
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  pathParams: string[];
  state: State;
  clock: Clock;
  idempotencyKey: string | null;
}

export interface RouteResult {
  status: number;
  body: Record<string, unknown>;
  /** Journals created by this call (the request log counts them). */
  created?: number;
}

export interface Route {
  method: string;
  /** Route name used by fault injection and the request log. */
  name: string;
  pattern: RegExp;
  handler: (ctx: RouteCtx) => RouteResult;
}

const BASE = "/api.xro/2.0";

/** The envelope every Accounting API response carries (xero_accounting.yaml response examples). */
function envelope(clock: Clock, key: string, items: unknown[], extra: Record<string, unknown> = {}) {
  return {
    Id: randomUUID(),
    Status: "OK",
    ProviderName: "Tally Xero test server",
    DateTimeUTC: msDate(clock.now(), false),
    ...extra,
    [key]: items,
  };
}

const LINE_AMOUNT_TYPES = ["NoTax", "Exclusive", "Inclusive"] as const;
const CREATE_STATUSES = ["DRAFT", "POSTED"] as const;
const JOURNAL_FIELDS = new Set([
  "Narration",
  "JournalLines",
  "Date",
  "LineAmountTypes",
  "Status",
  "Url",
  "ShowOnCashBasisReports",
  "ManualJournalID",
]);
const LINE_FIELDS = new Set(["LineAmount", "AccountCode", "AccountID", "Description", "TaxType", "Tracking"]);

type Checked =
  | { ok: true; rec: Omit<ManualJournalRec, "ManualJournalID" | "UpdatedDateUTC"> }
  | { ok: false; element: Record<string, unknown> };

/**
 * Validates one ManualJournal element. Rules and their sources:
 * - `Narration` is required (xero_accounting.yaml `ManualJournal`; billing-facts §3.2 "(required)";
 *   https://developer.xero.com/documentation/api/accounting/manualjournals "Narration: Description
 *   of journal being posted" in the required-elements table). Message ASSUMED.
 * - `JournalLines`: a journal needs at least two lines, and "The total debits (x) must equal total
 *   credits (y)" (the ValidationErrors message in xero_accounting.yaml's createManualJournals
 *   example). Debits are positive, credits negative (`ManualJournalLine.LineAmount`).
 * - `AccountCode` must be an active account of the chart (the yaml example's warning "Account code
 *   '476' has been removed as it does not match a recognised account"; this server refuses the
 *   journal instead of silently dropping the code, the stricter behaviour for a client). ASSUMED:
 *   the message of Xero's invoice endpoint for the same fault.
 * - `Status` on create: DRAFT or POSTED (the other enum values are transitions of an existing
 *   journal); `LineAmountTypes` NoTax | Exclusive | Inclusive. Only NoTax is implemented here:
 *   tax calculation is not, so the others get a 400 rather than wrong totals.
 * - `LineAmount` is money: at most 2 decimal places (`x-is-money`; ASSUMED that Xero refuses
 *   rather than rounds more). A manual journal has no currency field: it posts in the
 *   organisation's base currency.
 * Unknown fields are refused (a strictness of this server, not Xero's: it catches typos).
 */
function checkJournal(raw: unknown, state: State, today: string): Checked {
  const errors: { Message: string }[] = [];
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return { ok: false, element: { ValidationErrors: [{ Message: "A manual journal must be an object." }] } };
  }
  const j = raw as Record<string, unknown>;
  for (const k of Object.keys(j)) {
    if (!JOURNAL_FIELDS.has(k)) errors.push({ Message: `Unknown field '${k}' (test server).` });
  }
  if ("ManualJournalID" in j)
    errors.push({ Message: "Updating manual journals is not implemented by the test server." });
  const narration = typeof j.Narration === "string" ? j.Narration.trim() : "";
  if (narration === "") errors.push({ Message: "Narration cannot be empty." });
  const date = j.Date === undefined ? today : j.Date;
  if (
    typeof date !== "string" ||
    !/^\d{4}-\d{2}-\d{2}$/.test(date) ||
    Number.isNaN(Date.parse(`${date}T00:00:00Z`))
  ) {
    errors.push({ Message: "The Date must be a valid date (YYYY-MM-DD)." });
  }
  const status = j.Status ?? "DRAFT";
  if (!CREATE_STATUSES.includes(status as never))
    errors.push({ Message: `Status '${JSON.stringify(status)}' is not valid for a new manual journal.` });
  const lat = j.LineAmountTypes ?? "NoTax";
  if (!LINE_AMOUNT_TYPES.includes(lat as never))
    errors.push({ Message: `LineAmountTypes '${JSON.stringify(lat)}' is not valid.` });
  else if (lat !== "NoTax")
    errors.push({ Message: "Only LineAmountTypes NoTax is implemented by the test server." });

  const lines: JournalLineRec[] = [];
  const rawLines = Array.isArray(j.JournalLines) ? (j.JournalLines as unknown[]) : [];
  if (rawLines.length < 2) errors.push({ Message: "A manual journal must have at least two journal lines." });
  let debits = new Big(0);
  let credits = new Big(0);
  for (const rl of rawLines) {
    if (typeof rl !== "object" || rl === null) {
      errors.push({ Message: "A journal line must be an object." });
      continue;
    }
    const l = rl as Record<string, unknown>;
    for (const k of Object.keys(l))
      if (!LINE_FIELDS.has(k)) errors.push({ Message: `Unknown line field '${k}' (test server).` });
    let amount: Big | null = null;
    // JSON numbers arrive as doubles; String() gives back the shortest decimal that round-trips,
    // which is the literal sent for any amount with ≤ 15 significant digits.
    const text =
      typeof l.LineAmount === "number"
        ? String(l.LineAmount)
        : typeof l.LineAmount === "string"
          ? l.LineAmount
          : "";
    try {
      amount = new Big(text);
    } catch {
      errors.push({ Message: "LineAmount must be a number." });
    }
    if (amount !== null && amount.round(2).cmp(amount) !== 0) {
      errors.push({ Message: `LineAmount ${text} has more than 2 decimal places.` });
    }
    if (amount !== null) {
      if (amount.gt(0)) debits = debits.plus(amount);
      else credits = credits.plus(amount);
    }
    const code = typeof l.AccountCode === "string" ? l.AccountCode : "";
    const acct = state.account(code);
    if (code === "") errors.push({ Message: "An account code must be supplied for each journal line." });
    else if (acct === undefined || acct.Status !== "ACTIVE") {
      errors.push({ Message: `Account code '${code}' is not a valid code for this document.` });
    }
    lines.push({
      LineAmount: amount?.toFixed() ?? "0",
      AccountCode: code,
      AccountID: acct?.AccountID ?? "",
      Description: typeof l.Description === "string" ? l.Description : "",
    });
  }
  if (rawLines.length >= 2 && !debits.plus(credits).eq(0)) {
    errors.push({
      Message: `The total debits (${debits.toFixed(2)}) must equal total credits (${credits.toFixed(2)})`,
    });
  }
  if (errors.length > 0) return { ok: false, element: { ...j, ValidationErrors: errors } };
  return {
    ok: true,
    rec: {
      Narration: narration,
      Date: date as string,
      Status: status as "DRAFT" | "POSTED",
      LineAmountTypes: lat as "NoTax",
      ShowOnCashBasisReports: j.ShowOnCashBasisReports !== false,
      ...(typeof j.Url === "string" ? { Url: j.Url } : {}),
      JournalLines: lines,
      createdByKey: null,
    },
  };
}

/**
 * `PUT /ManualJournals` ("Creates one or more manual journals") and `POST /ManualJournals`
 * ("Updates or creates a single manual journal"; both take the `ManualJournals` array:
 * xero_accounting.yaml `createManualJournals` / `updateOrCreateManualJournals`).
 *
 * `summarizeErrors` (xero_accounting.yaml parameter): `false` → "return 200 OK and mix of
 * successfully created objects and any with validation errors", each element with
 * `StatusAttributeString` OK | ERROR. Otherwise (Xero's documented default is to summarize; the
 * yaml's `default: false` contradicts its own description) any invalid element fails the request
 * with a 400 ValidationException listing the invalid elements, and nothing is created
 * (ASSUMED: all or nothing).
 */
function createJournals(ctx: RouteCtx): RouteResult {
  const body = ctx.body as { ManualJournals?: unknown } | null;
  if (typeof body !== "object" || body === null || !Array.isArray(body.ManualJournals)) {
    throw badRequest("The request body must be a ManualJournals array.");
  }
  const today = new Date(ctx.clock.now()).toISOString().slice(0, 10);
  const checked = body.ManualJournals.map((j) => checkJournal(j, ctx.state, today));
  const summarize = (ctx.query.get("summarizeErrors") ?? "true").toLowerCase() !== "false";
  if (summarize && checked.some((c) => !c.ok)) {
    throw validationException(checked.flatMap((c) => (c.ok ? [] : [c.element])));
  }
  let created = 0;
  const out = checked.map((c) => {
    if (!c.ok) return { ...c.element, StatusAttributeString: "ERROR" };
    const rec = ctx.state.insertJournal({ ...c.rec, createdByKey: ctx.idempotencyKey });
    created++;
    return { ...renderJournal(rec), StatusAttributeString: "OK" };
  });
  return { status: 200, body: envelope(ctx.clock, "ManualJournals", out), created };
}

/**
 * `GET /ManualJournals`: `where` (subset, see where.ts), `order` (only the default order,
 * UpdatedDateUTC then id, is implemented), `page` ("Up to 100 manual journals will be returned in
 * a single API call with line items shown"), `pageSize`, and `If-Modified-Since` ("Only records
 * created or modified since this timestamp will be returned") — all from xero_accounting.yaml
 * `getManualJournals`. Without `page` the lines are omitted (the yaml's list example shows
 * `JournalLines: []`).
 */
function listJournals(ctx: RouteCtx): RouteResult {
  let rows = ctx.state.allJournals();
  const ims = ctx.headers["if-modified-since"];
  if (typeof ims === "string") {
    const t = Date.parse(ims.endsWith("Z") || /[+-]\d\d:?\d\d$/.test(ims) ? ims : `${ims}Z`);
    if (Number.isNaN(t)) throw badRequest(`If-Modified-Since '${ims}' is not a valid date.`);
    rows = rows.filter((j) => j.UpdatedDateUTC > t);
  }
  const where = ctx.query.get("where");
  if (where !== null && where.trim() !== "") {
    const f = compileWhere(where, ["Narration", "Status", "ManualJournalID"]);
    rows = rows.filter((j) => f(j as unknown as Record<string, unknown>));
  }
  const order = ctx.query.get("order");
  if (order !== null && order.trim() !== "" && order.trim() !== "UpdatedDateUTC ASC") {
    throw badRequest(`order '${order}' is not supported by this test server`);
  }
  rows = [...rows].sort(
    (a, b) => a.UpdatedDateUTC - b.UpdatedDateUTC || a.ManualJournalID.localeCompare(b.ManualJournalID),
  );
  const pageRaw = ctx.query.get("page");
  if (pageRaw === null)
    return {
      status: 200,
      body: envelope(
        ctx.clock,
        "ManualJournals",
        rows.map((j) => renderJournal(j, false)),
      ),
    };
  const page = Math.max(1, Number.parseInt(pageRaw, 10) || 1);
  const pageSize = Math.min(
    1000,
    Math.max(1, Number.parseInt(ctx.query.get("pageSize") ?? "100", 10) || 100),
  );
  const slice = rows.slice((page - 1) * pageSize, page * pageSize);
  return {
    status: 200,
    body: envelope(
      ctx.clock,
      "ManualJournals",
      slice.map((j) => renderJournal(j, true)),
      {
        pagination: { page, pageSize, pageCount: Math.ceil(rows.length / pageSize), itemCount: rows.length },
      },
    ),
  };
}

/** `GET /ManualJournals/{ManualJournalID}` (xero_accounting.yaml `getManualJournal`). */
function getJournal(ctx: RouteCtx): RouteResult {
  const j = ctx.state.journal(ctx.pathParams[0]!);
  if (j === undefined) throw problem(404, "Not Found", "The resource you're looking for cannot be found");
  return { status: 200, body: envelope(ctx.clock, "ManualJournals", [renderJournal(j)]) };
}

/** `GET /Accounts` (xero_accounting.yaml `getAccounts`; `where` on Code/Status/Type). */
function listAccounts(ctx: RouteCtx): RouteResult {
  let rows = ctx.state.allAccounts();
  const where = ctx.query.get("where");
  if (where !== null && where.trim() !== "") {
    const f = compileWhere(where, ["Code", "Status", "Type", "Name"]);
    rows = rows.filter((a) => f(a as unknown as Record<string, unknown>));
  }
  return { status: 200, body: envelope(ctx.clock, "Accounts", rows.map(renderAccount)) };
}

/** `GET /Organisation` (xero_accounting.yaml `getOrganisations`: OrganisationID, Name, BaseCurrency, …). */
function organisation(ctx: RouteCtx): RouteResult {
  const s = ctx.state;
  return {
    status: 200,
    body: envelope(ctx.clock, "Organisations", [
      {
        OrganisationID: s.organisationId,
        APIKey: "",
        Name: s.orgName,
        LegalName: s.orgName,
        PaysTax: false,
        Version: "GLOBAL",
        OrganisationType: "COMPANY",
        BaseCurrency: s.baseCurrency,
        CountryCode: "US",
        IsDemoCompany: false,
        OrganisationStatus: "ACTIVE",
        Timezone: "UTC",
        OrganisationEntityType: "COMPANY",
        ShortCode: "!test",
        Edition: "BUSINESS",
        Class: "STANDARD",
      },
    ]),
  };
}

export const routes: Route[] = [
  {
    method: "GET",
    name: "GET /api.xro/2.0/Organisation",
    pattern: new RegExp(`^${BASE}/Organisation/?$`, "i"),
    handler: organisation,
  },
  {
    method: "GET",
    name: "GET /api.xro/2.0/Accounts",
    pattern: new RegExp(`^${BASE}/Accounts/?$`, "i"),
    handler: listAccounts,
  },
  {
    method: "PUT",
    name: "PUT /api.xro/2.0/ManualJournals",
    pattern: new RegExp(`^${BASE}/ManualJournals/?$`, "i"),
    handler: createJournals,
  },
  {
    method: "POST",
    name: "POST /api.xro/2.0/ManualJournals",
    pattern: new RegExp(`^${BASE}/ManualJournals/?$`, "i"),
    handler: createJournals,
  },
  {
    method: "GET",
    name: "GET /api.xro/2.0/ManualJournals",
    pattern: new RegExp(`^${BASE}/ManualJournals/?$`, "i"),
    handler: listJournals,
  },
  {
    method: "GET",
    name: "GET /api.xro/2.0/ManualJournals/:id",
    pattern: new RegExp(`^${BASE}/ManualJournals/([0-9a-fA-F-]{36})/?$`, "i"),
    handler: getJournal,
  },
];

export { XeroHttpError };
