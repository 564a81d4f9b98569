import type Stripe from "stripe";
import {
  arr,
  bool,
  int,
  invalid,
  mergeMetadata,
  obj,
  oneOf,
  onlyParams,
  requiredStr,
  str,
} from "./errors.js";
import type { FormObject, FormValue } from "./form.js";
import { renderLine, type CreditNoteRec, type LineRec, type Wire } from "./objects.js";
import { matches, parseQuery } from "./search.js";
import type { RequestMeta, State } from "./state.js";

export interface HandlerContext extends RequestMeta {
  params: FormObject;
  pathParams: string[];
  state: State;
}

export interface Route {
  method: "GET" | "POST" | "DELETE";
  pattern: RegExp;
  /** Stripe counts each named API operation as its own endpoint (https://docs.stripe.com/rate-limits). */
  name: string;
  handler: (ctx: HandlerContext) => { status: number; body: unknown };
}

const ok = (body: unknown) => ({ status: 200, body });

/** `expand` is accepted everywhere and not implemented: referenced objects stay ids. */
const COMMON = ["expand"] as const;

const asObject = (v: FormValue, param: string): FormObject => {
  if (typeof v === "string" || Array.isArray(v)) throw invalid(`Invalid object: ${param}`, param);
  return v;
};

/**
 * Cursor pagination (https://docs.stripe.com/api/pagination): `limit` 1–100, default 10;
 * `starting_after` / `ending_before` take an object id from the list; `has_more` says whether more
 * follow in that direction.
 */
function paginate<T extends { id: string }>(
  items: readonly T[],
  params: FormObject,
): { data: T[]; hasMore: boolean } {
  const limit = int(params, "limit") ?? 10;
  if (limit < 1 || limit > 100) throw invalid("Invalid limit: must be between 1 and 100", "limit");
  const after = str(params, "starting_after");
  const before = str(params, "ending_before");
  if (after !== undefined && before !== undefined) {
    throw invalid(
      "You may only specify one of these parameters: ending_before, starting_after.",
      "ending_before",
    );
  }
  if (after !== undefined) {
    const i = items.findIndex((x) => x.id === after);
    if (i === -1) throw invalid(`No such object: '${after}'`, "starting_after", "resource_missing");
    const data = items.slice(i + 1, i + 1 + limit);
    return { data, hasMore: i + 1 + limit < items.length };
  }
  if (before !== undefined) {
    const i = items.findIndex((x) => x.id === before);
    if (i === -1) throw invalid(`No such object: '${before}'`, "ending_before", "resource_missing");
    const start = Math.max(0, i - limit);
    return { data: items.slice(start, i), hasMore: start > 0 };
  }
  return { data: items.slice(0, limit), hasMore: items.length > limit };
}

/**
 * `created` on list endpoints (https://docs.stripe.com/api/invoices/list#list_invoices-created,
 * https://docs.stripe.com/api/credit_notes/list): an exact timestamp, or a range map with any of
 * `gt`, `gte`, `lt`, `lte` (Unix seconds).
 */
function createdFilter(params: FormObject): (created: number) => boolean {
  const raw = params.created;
  if (raw === undefined) return () => true;
  if (typeof raw === "string") {
    const exact = int(params, "created");
    return (c) => c === exact;
  }
  const range = asObject(raw, "created");
  onlyParams(range, ["gt", "gte", "lt", "lte"], "created");
  const b = (k: string) => int(range, k, `created[${k}]`);
  const [gt, gte, lt, lte] = [b("gt"), b("gte"), b("lt"), b("lte")];
  return (c) =>
    (gt === undefined || c > gt) &&
    (gte === undefined || c >= gte) &&
    (lt === undefined || c < lt) &&
    (lte === undefined || c <= lte);
}

function period(raw: FormValue | undefined, param: string, now: number): { start: number; end: number } {
  if (raw === undefined) return { start: now, end: now };
  const p = asObject(raw, param);
  onlyParams(p, ["start", "end"], param);
  const start = int(p, "start", `${param}[start]`);
  const end = int(p, "end", `${param}[end]`);
  if (start === undefined)
    throw invalid(`Missing required param: ${param}[start].`, `${param}[start]`, "parameter_missing");
  if (end === undefined)
    throw invalid(`Missing required param: ${param}[end].`, `${param}[end]`, "parameter_missing");
  // InvoiceAddLinesParams.Line.Period: "The end of the period, which must be greater than or equal to the start."
  if (end < start)
    throw invalid("The period end must be greater than or equal to the period start.", `${param}[end]`);
  return { start, end };
}

const LINE_PARAMS = [
  "amount",
  "description",
  "discountable",
  "metadata",
  "period",
  "price_data",
  "quantity",
] as const;
/** Documented line params this server does not implement: refused loudly, never ignored. */
const LINE_PARAMS_NOT_IMPLEMENTED = [
  "discounts",
  "invoice_item",
  "pricing",
  "quantity_decimal",
  "tax_amounts",
  "tax_rates",
];

function parseLine(
  raw: FormValue,
  i: number,
  invoiceCurrency: string,
  now: number,
): Omit<LineRec, "id" | "invoiceItem" | "currency"> {
  const param = `lines[${i}]`;
  const p = asObject(raw, param);
  for (const k of Object.keys(p)) {
    if (LINE_PARAMS_NOT_IMPLEMENTED.includes(k)) {
      throw invalid(`stripe-server does not implement ${param}[${k}]`, `${param}[${k}]`);
    }
  }
  onlyParams(p, LINE_PARAMS, param);
  const amount = int(p, "amount", `${param}[amount]`);
  const quantity = int(p, "quantity", `${param}[quantity]`);
  const priceData = obj(p, "price_data", `${param}[price_data]`);
  if (quantity !== undefined && quantity < 0) {
    throw invalid("Quantity must be a non-negative integer.", `${param}[quantity]`);
  }
  let total: number;
  let unitAmountDecimal: string | null = null;
  if (amount !== undefined && priceData !== undefined) {
    throw invalid(
      `You may only specify one of these parameters: ${param}[amount], ${param}[price_data].`,
      `${param}[amount]`,
      "parameters_exclusive",
    );
  } else if (amount !== undefined) {
    // ASSUMED: with `amount` the amount is the line total (InvoiceItem.amount "should always be equal
    // to unit_amount * quantity"); a quantity other than 1 alongside it is refused here.
    if (quantity !== undefined && quantity !== 1) {
      throw invalid(`${param}[quantity] cannot be combined with ${param}[amount].`, `${param}[quantity]`);
    }
    total = amount;
  } else if (priceData !== undefined) {
    const pp = `${param}[price_data]`;
    onlyParams(
      priceData,
      ["currency", "product", "product_data", "tax_behavior", "unit_amount", "unit_amount_decimal"],
      pp,
    );
    const currency = requiredStr(priceData, "currency", `${pp}[currency]`).toLowerCase();
    // Invoice items share the invoice's currency (InvoiceItem.currency); a mismatch is refused.
    if (currency !== invoiceCurrency) {
      throw invalid(
        `The price_data currency (${currency}) must match the invoice currency (${invoiceCurrency}).`,
        `${pp}[currency]`,
      );
    }
    if (priceData.product === undefined && priceData.product_data === undefined) {
      throw invalid(`Missing required param: ${pp}[product].`, `${pp}[product]`, "parameter_missing");
    }
    const unit = int(priceData, "unit_amount", `${pp}[unit_amount]`);
    const unitDec = str(priceData, "unit_amount_decimal", `${pp}[unit_amount_decimal]`);
    if ((unit === undefined) === (unitDec === undefined)) {
      throw invalid(
        `Exactly one of ${pp}[unit_amount] and ${pp}[unit_amount_decimal] is required.`,
        `${pp}[unit_amount]`,
      );
    }
    const unitValue = unit ?? Number(unitDec);
    if (!Number.isFinite(unitValue) || unitValue < 0) {
      throw invalid("Invalid unit amount.", `${pp}[unit_amount]`);
    }
    unitAmountDecimal = unitDec ?? String(unit);
    // ASSUMED: a fractional unit amount × quantity rounds half away from zero to the minor unit.
    total = Math.round(unitValue * (quantity ?? 1));
  } else {
    throw invalid(`Missing required param: ${param}[amount].`, `${param}[amount]`, "parameter_missing");
  }
  const discountable = bool(p, "discountable", `${param}[discountable]`);
  return {
    amount: total,
    description: str(p, "description", `${param}[description]`) ?? null,
    metadata: mergeMetadata({}, p.metadata, `${param}[metadata]`),
    period: period(p.period, `${param}[period]`, now),
    quantity: quantity ?? 1,
    unitAmountDecimal,
    // "Defaults to false for prorations or negative line items, and true for all other line items."
    discountable: discountable ?? total >= 0,
  };
}

const INVOICE_SEARCH_FIELDS = [
  "metadata",
  "customer",
  "status",
  "currency",
  "number",
  "total",
  "created",
] as const;

export const routes: Route[] = [
  {
    // https://docs.stripe.com/api/customers/create
    method: "POST",
    pattern: /^\/v1\/customers$/,
    name: "POST /v1/customers",
    handler: ({ params, state }) => {
      onlyParams(params, [
        ...COMMON,
        "name",
        "email",
        "description",
        "metadata",
        "invoice_prefix",
        "invoice_settings",
      ]);
      const prefix = str(params, "invoice_prefix");
      // Customer.invoice_prefix: 3–12 uppercase letters or numbers.
      if (prefix !== undefined && !/^[A-Z0-9]{3,12}$/.test(prefix)) {
        throw invalid("Invalid invoice_prefix: must be 3-12 uppercase letters or numbers.", "invoice_prefix");
      }
      const settings = obj(params, "invoice_settings") ?? {};
      onlyParams(settings, ["footer"], "invoice_settings");
      const c = state.createCustomer({
        name: str(params, "name") ?? null,
        email: str(params, "email") ?? null,
        description: str(params, "description") ?? null,
        metadata: mergeMetadata({}, params.metadata, "metadata"),
        invoicePrefix: prefix,
        footer: str(settings, "footer", "invoice_settings[footer]") ?? null,
      });
      return ok(state.customerView(c));
    },
  },
  {
    // https://docs.stripe.com/api/customers/retrieve
    method: "GET",
    pattern: /^\/v1\/customers\/([^/]+)$/,
    name: "GET /v1/customers/:id",
    handler: ({ params, pathParams, state }) => {
      onlyParams(params, COMMON);
      return ok(state.customerView(state.customer(pathParams[0]!)));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/create (params: stripe@23.1.0 InvoiceCreateParams)
    method: "POST",
    pattern: /^\/v1\/invoices$/,
    name: "POST /v1/invoices",
    handler: ({ params, state, ...meta }) => {
      onlyParams(params, [
        ...COMMON,
        "customer",
        "auto_advance",
        "collection_method",
        "days_until_due",
        "due_date",
        "pending_invoice_items_behavior",
        "currency",
        "metadata",
        "description",
      ]);
      const customer = requiredStr(params, "customer");
      const collectionMethod =
        oneOf(params, "collection_method", ["charge_automatically", "send_invoice"] as const) ??
        "charge_automatically";
      const daysUntilDue = int(params, "days_until_due");
      const dueDate = int(params, "due_date");
      // "days_until_due / due_date: send_invoice only" (InvoiceCreateParams docs).
      if (collectionMethod !== "send_invoice") {
        if (daysUntilDue !== undefined) {
          throw invalid(
            "days_until_due can only be set when collection_method is send_invoice.",
            "days_until_due",
          );
        }
        if (dueDate !== undefined) {
          throw invalid("due_date can only be set when collection_method is send_invoice.", "due_date");
        }
      }
      if (daysUntilDue !== undefined && dueDate !== undefined) {
        throw invalid(
          "You may only specify one of these parameters: days_until_due, due_date.",
          "days_until_due",
          "parameters_exclusive",
        );
      }
      // Default `exclude`; `include` would pull the customer's pending invoice items, and this server
      // has no standalone invoice items, so both behave the same here.
      oneOf(params, "pending_invoice_items_behavior", ["exclude", "include"] as const);
      const currency = str(params, "currency")?.toLowerCase();
      if (currency !== undefined && !/^[a-z]{3}$/.test(currency)) {
        throw invalid(`Invalid currency: ${currency}`, "currency");
      }
      const inv = state.createInvoice(
        {
          customer,
          currency,
          // "auto_advance … Defaults to false" for invoices created through the API.
          autoAdvance: bool(params, "auto_advance") ?? false,
          collectionMethod,
          daysUntilDue: daysUntilDue ?? null,
          dueDate: dueDate ?? null,
          description: str(params, "description") ?? null,
          metadata: mergeMetadata({}, params.metadata, "metadata"),
        },
        meta,
      );
      return ok(state.invoiceView(inv));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/search and https://docs.stripe.com/search
    method: "GET",
    pattern: /^\/v1\/invoices\/search$/,
    name: "GET /v1/invoices/search",
    handler: ({ params, state }) => {
      onlyParams(params, [...COMMON, "query", "limit", "page"]);
      const query = parseQuery(requiredStr(params, "query"), INVOICE_SEARCH_FIELDS);
      const limit = int(params, "limit") ?? 10;
      if (limit < 1 || limit > 100) throw invalid("Invalid limit: must be between 1 and 100", "limit");
      const page = str(params, "page");
      const offset = page === undefined ? 0 : Number(Buffer.from(page, "base64url").toString("utf8"));
      if (!Number.isInteger(offset) || offset < 0) throw invalid("Invalid page cursor.", "page");
      // Newest first (Map order is creation order).
      const hits = [...state.invoices.values()]
        .reverse()
        .filter((inv) => state.isSearchable(inv.id))
        .filter((inv) =>
          matches(query, (field, key) => {
            const view = state.invoiceView(inv);
            switch (field) {
              case "metadata":
                return key === undefined ? undefined : inv.metadata[key];
              case "customer":
                return inv.customer;
              case "status":
                return inv.status;
              case "currency":
                return inv.currency;
              case "number":
                return inv.number;
              case "total":
                return view.total;
              case "created":
                return inv.created;
              default:
                return undefined;
            }
          }),
        );
      const data = hits.slice(offset, offset + limit).map((inv) => state.invoiceView(inv));
      const more = offset + limit < hits.length;
      return ok({
        object: "search_result",
        data,
        has_more: more,
        next_page: more ? Buffer.from(String(offset + limit)).toString("base64url") : null,
        url: "/v1/invoices/search",
      } satisfies Wire<Stripe.ApiSearchResult<Stripe.Invoice>>);
    },
  },
  {
    // https://docs.stripe.com/api/invoices/list: newest first
    method: "GET",
    pattern: /^\/v1\/invoices$/,
    name: "GET /v1/invoices",
    handler: ({ params, state }) => {
      onlyParams(params, [
        ...COMMON,
        "customer",
        "status",
        "collection_method",
        "created",
        "limit",
        "starting_after",
        "ending_before",
      ]);
      const inCreated = createdFilter(params);
      const customer = str(params, "customer");
      const status = str(params, "status");
      const method = str(params, "collection_method");
      const all = [...state.invoices.values()]
        .reverse()
        .filter((i) => customer === undefined || i.customer === customer)
        .filter((i) => status === undefined || i.status === status)
        .filter((i) => method === undefined || i.collectionMethod === method)
        .filter((i) => inCreated(i.created));
      const page = paginate(all, params);
      return ok({
        object: "list",
        data: page.data.map((i) => state.invoiceView(i)),
        has_more: page.hasMore,
        url: "/v1/invoices",
      } satisfies Wire<Stripe.ApiList<Stripe.Invoice>>);
    },
  },
  {
    // https://docs.stripe.com/api/invoices/retrieve: `lines` holds "the first handful" of lines
    method: "GET",
    pattern: /^\/v1\/invoices\/([^/]+)$/,
    name: "GET /v1/invoices/:id",
    handler: ({ params, pathParams, state }) => {
      onlyParams(params, COMMON);
      return ok(state.invoiceView(state.invoice(pathParams[0]!)));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/delete: drafts only
    method: "DELETE",
    pattern: /^\/v1\/invoices\/([^/]+)$/,
    name: "DELETE /v1/invoices/:id",
    handler: ({ params, pathParams, state, ...meta }) => {
      onlyParams(params, []);
      const id = pathParams[0]!;
      state.deleteDraft(id, meta);
      return ok({ id, object: "invoice", deleted: true } satisfies Wire<Stripe.DeletedInvoice>);
    },
  },
  {
    // https://docs.stripe.com/api/invoice-line-item/bulk (InvoiceAddLinesParams)
    method: "POST",
    pattern: /^\/v1\/invoices\/([^/]+)\/add_lines$/,
    name: "POST /v1/invoices/:id/add_lines",
    handler: ({ params, pathParams, state }) => {
      onlyParams(params, [...COMMON, "lines", "invoice_metadata"]);
      const raw = arr(params, "lines");
      if (raw === undefined || raw.length === 0) {
        throw invalid("Missing required param: lines.", "lines", "parameter_missing");
      }
      const inv = state.invoice(pathParams[0]!);
      const now = state.opts.clock.nowSec();
      const lines = raw.map((l, i) => parseLine(l, i, inv.currency, now));
      const invoiceMetadata =
        params.invoice_metadata === undefined
          ? undefined
          : (m: Record<string, string>) => mergeMetadata(m, params.invoice_metadata, "invoice_metadata");
      // Validate invoice_metadata before anything changes, so a bad value adds no lines.
      invoiceMetadata?.(inv.metadata);
      return ok(state.invoiceView(state.addLines(inv.id, lines, invoiceMetadata)));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/invoice_lines: the paginated line list
    method: "GET",
    pattern: /^\/v1\/invoices\/([^/]+)\/lines$/,
    name: "GET /v1/invoices/:id/lines",
    handler: ({ params, pathParams, state }) => {
      onlyParams(params, [...COMMON, "limit", "starting_after", "ending_before"]);
      const inv = state.invoice(pathParams[0]!);
      const page = paginate(inv.lines, params);
      return ok({
        object: "list",
        data: page.data.map((l) => renderLine(l, inv.id)),
        has_more: page.hasMore,
        url: `/v1/invoices/${inv.id}/lines`,
      } satisfies Wire<Stripe.ApiList<Stripe.InvoiceLineItem>>);
    },
  },
  {
    // https://docs.stripe.com/api/invoices/finalize
    method: "POST",
    pattern: /^\/v1\/invoices\/([^/]+)\/finalize$/,
    name: "POST /v1/invoices/:id/finalize",
    handler: ({ params, pathParams, state, ...meta }) => {
      onlyParams(params, [...COMMON, "auto_advance"]);
      return ok(state.invoiceView(state.finalize(pathParams[0]!, bool(params, "auto_advance"), meta)));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/pay: no payment methods are modelled, so a pay succeeds
    // (ASSUMED success of the default payment method); `paid_out_of_band` records an off-Stripe payment.
    method: "POST",
    pattern: /^\/v1\/invoices\/([^/]+)\/pay$/,
    name: "POST /v1/invoices/:id/pay",
    handler: ({ params, pathParams, state, ...meta }) => {
      onlyParams(params, [
        ...COMMON,
        "paid_out_of_band",
        "forgive",
        "off_session",
        "payment_method",
        "source",
        "mandate",
      ]);
      return ok(
        state.invoiceView(state.pay(pathParams[0]!, bool(params, "paid_out_of_band") ?? false, meta)),
      );
    },
  },
  {
    // https://docs.stripe.com/api/invoices/void
    method: "POST",
    pattern: /^\/v1\/invoices\/([^/]+)\/void$/,
    name: "POST /v1/invoices/:id/void",
    handler: ({ params, pathParams, state, ...meta }) => {
      onlyParams(params, COMMON);
      return ok(state.invoiceView(state.void(pathParams[0]!, meta)));
    },
  },
  {
    // https://docs.stripe.com/api/invoices/mark_uncollectible
    method: "POST",
    pattern: /^\/v1\/invoices\/([^/]+)\/mark_uncollectible$/,
    name: "POST /v1/invoices/:id/mark_uncollectible",
    handler: ({ params, pathParams, state, ...meta }) => {
      onlyParams(params, COMMON);
      return ok(state.invoiceView(state.markUncollectible(pathParams[0]!, meta)));
    },
  },
  {
    // https://docs.stripe.com/api/credit_notes/create (CreditNoteCreateParams)
    method: "POST",
    pattern: /^\/v1\/credit_notes$/,
    name: "POST /v1/credit_notes",
    handler: ({ params, state }) => {
      onlyParams(params, [
        ...COMMON,
        "invoice",
        "amount",
        "lines",
        "memo",
        "metadata",
        "reason",
        "credit_amount",
        "refund_amount",
        "out_of_band_amount",
      ]);
      const invoiceId = requiredStr(params, "invoice");
      const amount = int(params, "amount");
      const rawLines = arr(params, "lines");
      if ((amount === undefined) === (rawLines === undefined)) {
        throw invalid("Exactly one of amount or lines is required.", "amount");
      }
      const inv = state.invoice(invoiceId, "invoice");
      const lines: CreditNoteRec["lines"] = (rawLines ?? []).map((raw, i) => {
        const param = `lines[${i}]`;
        const l = asObject(raw, param);
        onlyParams(
          l,
          ["type", "amount", "description", "invoice_line_item", "metadata", "quantity", "unit_amount"],
          param,
        );
        const type = oneOf(l, "type", ["invoice_line_item", "custom_line_item"] as const, `${param}[type]`);
        if (type === undefined)
          throw invalid(`Missing required param: ${param}[type].`, `${param}[type]`, "parameter_missing");
        const metadata = mergeMetadata({}, l.metadata, `${param}[metadata]`);
        if (type === "invoice_line_item") {
          const lineId = requiredStr(l, "invoice_line_item", `${param}[invoice_line_item]`);
          const line = inv.lines.find((x) => x.id === lineId);
          if (!line)
            throw invalid(
              `No such invoice line item: '${lineId}'`,
              `${param}[invoice_line_item]`,
              "resource_missing",
            );
          const a = int(l, "amount", `${param}[amount]`) ?? line.amount;
          return {
            id: `cnli_${lineId.slice(3)}_${i}`,
            type,
            amount: a,
            description: line.description,
            invoiceLineItem: lineId,
            quantity: null,
            unitAmount: null,
            metadata,
          };
        }
        const unit = int(l, "unit_amount", `${param}[unit_amount]`);
        if (unit === undefined)
          throw invalid(
            `Missing required param: ${param}[unit_amount].`,
            `${param}[unit_amount]`,
            "parameter_missing",
          );
        const qty = int(l, "quantity", `${param}[quantity]`) ?? 1;
        return {
          id: `cnli_custom_${i}_${Date.now().toString(36)}`,
          type,
          amount: unit * qty,
          description: requiredStr(l, "description", `${param}[description]`),
          invoiceLineItem: undefined,
          quantity: qty,
          unitAmount: unit,
          metadata,
        };
      });
      const total = amount ?? lines.reduce((s, l) => s + l.amount, 0);
      const cn = state.createCreditNote({
        invoice: inv.id,
        amount: total,
        lines,
        memo: str(params, "memo") ?? null,
        metadata: mergeMetadata({}, params.metadata, "metadata"),
        reason:
          oneOf(params, "reason", [
            "duplicate",
            "fraudulent",
            "order_change",
            "product_unsatisfactory",
          ] as const) ?? null,
        creditAmount: int(params, "credit_amount") ?? 0,
        refundAmount: int(params, "refund_amount") ?? 0,
        outOfBandAmount: int(params, "out_of_band_amount") ?? null,
      });
      return ok(state.creditNoteView(cn));
    },
  },
  {
    // https://docs.stripe.com/api/credit_notes/list
    method: "GET",
    pattern: /^\/v1\/credit_notes$/,
    name: "GET /v1/credit_notes",
    handler: ({ params, state }) => {
      onlyParams(params, [
        ...COMMON,
        "invoice",
        "customer",
        "created",
        "limit",
        "starting_after",
        "ending_before",
      ]);
      const inCreated = createdFilter(params);
      const invoice = str(params, "invoice");
      const customer = str(params, "customer");
      const all = [...state.creditNotes.values()]
        .reverse()
        .filter((c) => invoice === undefined || c.invoice === invoice)
        .filter((c) => customer === undefined || c.customer === customer)
        .filter((c) => inCreated(c.created));
      const page = paginate(all, params);
      return ok({
        object: "list",
        data: page.data.map((c) => state.creditNoteView(c)),
        has_more: page.hasMore,
        url: "/v1/credit_notes",
      } satisfies Wire<Stripe.ApiList<Stripe.CreditNote>>);
    },
  },
];
