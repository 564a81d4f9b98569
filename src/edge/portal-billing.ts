import Big from "big.js";
import { DateTime } from "luxon";
import {
  upcomingInvoice,
  type Invoice,
  type InvoiceIndex,
  type InvoiceLine,
  type InvoiceSummary,
} from "../billing/index.js";
import type { CatalogStore } from "../catalog/index.js";
import { currencyOf, type Price } from "../rating/index.js";
import type { EdgeDeps } from "./app.js";
import { closeDepsOf } from "./close-deps.js";
import { esc, formatDate, formatMoney, formatPeriod, groupDigits } from "./portal-html.js";

/*
 * The billing half of the customer page: estimated charges of the current period and the past
 * invoices. Estimates come from `upcomingInvoice`, the close's own pricing path (the same
 * function as `GET /v1/customers/:key/upcoming-invoice`), so the page and the invoice that the
 * close will write agree to the minor unit; this file only reads and renders.
 */

/** Quantities only: exact, division truncated to an integer (percentages shown round down). */
const Q = Big();
Q.strict = true;
Q.NE = -1e6;
Q.PE = 1e6;
Q.DP = 0;
Q.RM = Big.roundDown;

const ZERO = new Q("0");
const HUNDRED = new Q("100");

const isZero = (v: string | undefined) => v === undefined || new Q(v).eq(ZERO);

/**
 * The quantity a metered price includes free each period, read from the price definition, or
 * null when it has none: its `included_quantity`, plus the leading tiers of a graduated price
 * that cost nothing (no unit and no flat amount), which rating applies after the included
 * quantity. A free first tier of a *volume* price is not an allowance: past it every unit is
 * priced, so it is not counted. A price that is free without limit has no allowance either.
 */
export function includedQuantity(price: Price): string | null {
  if (price.type !== "metered") return null;
  let included = new Q(price.included_quantity ?? "0");
  if (price.billing_scheme === "tiered" && price.tiers_mode === "graduated") {
    let free: string | undefined;
    for (const t of price.tiers ?? []) {
      const costsNothing =
        isZero(t.unit_amount ?? t.unit_amount_decimal) && isZero(t.flat_amount ?? t.flat_amount_decimal);
      if (!costsNothing || t.up_to === "inf" || t.up_to === null) break;
      free = t.up_to;
    }
    if (free !== undefined) included = included.plus(new Q(free));
  }
  return included.gt(ZERO) ? included.toString() : null;
}

/** Usage of one line against its included quantity. */
export interface Allowance {
  /** What the line measured this period (all of it, before the allowance). */
  used: string;
  included: string;
  /** `floor(100 × used / included)`. */
  percent: string;
  /** `used − included` when positive, else null. */
  over: string | null;
}

/** {@link Allowance} of `used` against `included` (both exact decimal strings, `included` > 0). */
export function allowanceOf(used: string, included: string): Allowance {
  const u = new Q(used);
  const inc = new Q(included);
  return {
    used: u.toString(),
    included: inc.toString(),
    percent: u.times(HUNDRED).div(inc).toString(),
    over: u.gt(inc) ? u.minus(inc).toString() : null,
  };
}

/** One subscription's estimate: priced, or a failure the page reports in place. */
export type Estimate =
  | {
      kind: "priced";
      subscription: string;
      plan: string;
      invoice: Invoice;
      allowances: Map<number, Allowance>;
    }
  | { kind: "failed"; subscription: string; plan: string };

/**
 * The customer's page data for billing: an estimate per active subscription (`null` when the
 * customer has no subscription at all, so the page shows no section). A subscription that
 * cannot be priced is logged and comes back `failed`; the others are unaffected.
 */
export async function estimatesFor(
  deps: EdgeDeps,
  customer: string,
  nowMs: number,
): Promise<Estimate[] | null> {
  const subs = deps.catalog.subscriptions.list().filter((s) => s.customer === customer);
  if (subs.length === 0) return null;
  const closeDeps = closeDepsOf(deps);
  const out = await Promise.all(
    subs.map(async (sub): Promise<Estimate | null> => {
      const plan = deps.catalog.plans.get(sub.plan)?.name ?? sub.plan;
      try {
        const invoice = await upcomingInvoice(closeDeps, sub.key, nowMs);
        if (invoice === null) return null;
        return {
          kind: "priced",
          subscription: sub.key,
          plan,
          invoice,
          allowances: await allowancesOf(deps.catalog, invoice),
        };
      } catch (err: unknown) {
        deps.log.error({ err, customer, subscription: sub.key }, "portal: cannot estimate charges");
        return { kind: "failed", subscription: sub.key, plan };
      }
    }),
  );
  return out.filter((e) => e !== null);
}

/**
 * The allowance of each usage line of the period itself (true-ups of earlier periods have
 * theirs on the earlier invoice), by line number: the line's price in the exact plan version
 * the line was rated with (from the invoice's rating record).
 */
async function allowancesOf(catalog: CatalogStore, inv: Invoice): Promise<Map<number, Allowance>> {
  const out = new Map<number, Allowance>();
  for (const line of inv.lines) {
    if (line.kind !== "usage" || line.true_up !== undefined || line.price === null) continue;
    const at = Date.parse(line.period.start);
    const seg = inv.rating.segments.find(
      (s) => s.plan === line.plan && Date.parse(s.from) <= at && at < Date.parse(s.to),
    );
    if (seg === undefined) continue;
    const plan = await catalog.plans.version(seg.plan, seg.plan_version);
    const price = plan?.prices.find((p) => p.key === line.price);
    const included = price === undefined ? null : includedQuantity(price);
    if (included !== null) out.set(line.number, allowanceOf(line.quantity, included));
  }
  return out;
}

/** The customer's finalized invoices, newest period first, one page of them. */
export interface InvoicePage {
  data: InvoiceSummary[];
  /** All finalized invoices of the customer. */
  total: number;
  /** 1-based, clamped to the pages that exist. */
  page: number;
  pages: number;
  /** Index of the first shown invoice among all (0-based). */
  offset: number;
}

export const invoicesPerPage = 12;

export function invoicePage(index: InvoiceIndex, customer: string, page: number): InvoicePage {
  const all = index.list({ customer, status: "finalized" }, Number.MAX_SAFE_INTEGER).data;
  const pages = Math.max(1, Math.ceil(all.length / invoicesPerPage));
  const p = Math.min(Math.max(1, page), pages);
  const offset = (p - 1) * invoicesPerPage;
  return { data: all.slice(offset, offset + invoicesPerPage), total: all.length, page: p, pages, offset };
}

const money = (amount: number, inv: Pick<Invoice, "currency" | "currency_exponent">) =>
  esc(formatMoney(amount, inv.currency, inv.currency_exponent));

function lineRow(line: InvoiceLine, inv: Invoice, tz: string, withPeriod: boolean): string {
  // A true-up line's quantity is the earlier period's whole usage as known now; say what of it
  // was billed already, so the amount (the difference) reads right.
  const billed =
    line.true_up === undefined ? "" : ` · ${groupDigits(line.true_up.billed_quantity)} billed before`;
  const period = withPeriod
    ? `<span class="sub">${esc(formatPeriod(line.period.start, line.period.end, tz) + billed)}</span>`
    : "";
  return `<tr data-line="${line.number}"${line.price === null ? "" : ` data-price="${esc(line.price)}"`}><th scope="row">${esc(line.description)}${period}</th><td class="num">${esc(groupDigits(line.quantity))}</td><td class="num amount" data-amount="${line.amount}">${money(line.amount, inv)}</td></tr>`;
}

function allowanceBlock(line: InvoiceLine, a: Allowance): string {
  const used = groupDigits(a.used);
  const included = groupDigits(a.included);
  const text = `${line.description}: used ${used} of ${included} included (${a.percent}%)${a.over === null ? "" : `, over by ${groupDigits(a.over)}`}`;
  // <progress> is display only (its value is a float to the browser); the numbers are in the text.
  const value = a.over === null ? a.used : a.included;
  return `<div class="allowance${a.over === null ? "" : " over"}" data-price="${esc(line.price ?? "")}" data-used="${esc(a.used)}" data-included="${esc(a.included)}" data-percent="${esc(a.percent)}"${a.over === null ? "" : ` data-over="${esc(a.over)}"`}>
<p><span>${esc(line.description)}</span> <span class="quota">${esc(used)} of ${esc(included)} included · ${esc(a.percent)}%</span>${a.over === null ? "" : ` <strong class="over-by">over by ${esc(groupDigits(a.over))}</strong>`}</p>
<progress max="${esc(a.included)}" value="${esc(value)}" aria-label="${esc(text)}">${esc(a.percent)}%</progress>
</div>`;
}

function estimateBlock(e: Estimate, tz: string): string {
  if (e.kind === "failed") {
    return `<article class="estimate" data-subscription="${esc(e.subscription)}">
<h3>${esc(e.plan)}</h3>
<p class="error" role="alert">Estimated charges for this plan are unavailable right now. Your usage above is not affected; please try again later.</p>
</article>`;
  }
  const inv = e.invoice;
  const own = inv.lines.filter((l) => l.true_up === undefined);
  const late = inv.lines.filter((l) => l.true_up !== undefined);
  const allowances = own
    .map((l) => {
      const a = e.allowances.get(l.number);
      return a === undefined ? "" : allowanceBlock(l, a);
    })
    .join("\n");
  const table = (rows: InvoiceLine[], caption: string, withPeriod: boolean) =>
    `<div class="scroll"><table class="lines"><caption>${esc(caption)}</caption><thead><tr><th scope="col">Item</th><th scope="col" class="num">Quantity</th><th scope="col" class="num">Amount</th></tr></thead><tbody>${rows.map((l) => lineRow(l, inv, tz, withPeriod)).join("")}</tbody></table></div>`;
  return `<article class="estimate" data-subscription="${esc(e.subscription)}">
<h3>${esc(e.plan)} · <span class="period">${esc(formatPeriod(inv.period.start, inv.period.end, tz))}</span></h3>
${allowances === "" ? "" : `<div class="allowances">${allowances}</div>`}
${table(own, "Charges so far this period", false)}
${late.length === 0 ? "" : table(late, "Late usage from earlier periods (billed on this invoice)", true)}
<p class="est-total">Estimated total <span class="amount" data-amount="${inv.total}" data-currency="${esc(inv.currency)}">${money(inv.total, inv)}</span></p>
</article>`;
}

/** The "Estimated charges" section, or "" when the customer has no subscription. */
export function renderEstimates(estimates: Estimate[] | null, tz: string, asOfMs: number): string {
  if (estimates === null) return "";
  const body =
    estimates.length === 0
      ? "<p>No subscription is active in this period.</p>"
      : estimates.map((e) => estimateBlock(e, tz)).join("\n");
  return `<section class="panel billing" id="billing" aria-labelledby="h-billing">
<h2 id="h-billing">Estimated charges</h2>
<p class="note">An estimate from the usage recorded so far (as of <time datetime="${esc(new Date(asOfMs).toISOString())}">${esc(formatInstant(asOfMs, tz))}</time>), before taxes. It can change until the billing period closes: more usage, and late-arriving usage, still count.</p>
${body}
</section>`;
}

function formatInstant(ms: number, tz: string): string {
  return DateTime.fromMillis(ms, { zone: tz }).toFormat("d LLL yyyy, HH:mm ZZZZ");
}

/**
 * The "Past invoices" section. `link(id)` and `pageLink(n)` build the token-carrying URLs
 * (the page knows the token; this renderer does not need to).
 */
export function renderInvoices(
  p: InvoicePage,
  tz: string,
  link: (id: string) => string,
  pageLink: (page: number) => string,
): string {
  const rows = p.data
    .map((s) => {
      const exponent = currencyOf(s.currency)?.exponent ?? 2;
      return `<tr data-invoice="${esc(s.id)}"><th scope="row"><a href="${esc(link(s.id))}">${esc(s.number ?? s.id)}</a></th><td>${esc(formatPeriod(s.period_start, s.period_end, tz))}</td><td class="num amount" data-amount="${s.total}">${esc(formatMoney(s.total, s.currency, exponent))}</td><td>${s.finalized_at === null ? "–" : `<time datetime="${esc(s.finalized_at)}">${esc(formatDate(s.finalized_at, tz))}</time>`}</td></tr>`;
    })
    .join("");
  const shown =
    p.total === 0
      ? "No invoices yet."
      : `Showing ${p.offset + 1}–${p.offset + p.data.length} of ${p.total} invoice${p.total === 1 ? "" : "s"}, newest first.`;
  const nav =
    p.pages <= 1
      ? ""
      : `<nav aria-label="Invoice pages">${p.page > 1 ? `<a href="${esc(pageLink(p.page - 1))}" rel="prev">Newer invoices</a>` : ""} <span>Page ${p.page} of ${p.pages}</span> ${p.page < p.pages ? `<a href="${esc(pageLink(p.page + 1))}" rel="next">Older invoices</a>` : ""}</nav>`;
  return `<section class="panel invoices" id="invoices" aria-labelledby="h-invoices">
<h2 id="h-invoices">Past invoices</h2>
<p class="shown">${esc(shown)}</p>
${p.total === 0 ? "" : `<div class="scroll"><table class="invoice-list"><thead><tr><th scope="col">Number</th><th scope="col">Service period</th><th scope="col" class="num">Total</th><th scope="col">Finalized</th></tr></thead><tbody>${rows}</tbody></table></div>`}
${nav}
</section>`;
}
