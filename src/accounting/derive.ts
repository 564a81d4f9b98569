import { createHash } from "node:crypto";
import { DateTime } from "luxon";
import type { Invoice, InvoiceLine } from "../billing/invoice.js";
import { priceAccount, type Accounts } from "../catalog/accounts.js";
import type { LinePeriod } from "../rating/index.js";
import type { JournalEntry, JournalLine } from "./journal.js";

/*
 * Pure derivation of journal entries (no I/O): a finalized document or a recorded payment, the
 * chart of accounts and the accounting time zone in; balanced entries out. The same input always
 * gives the same entry (ids included), which is what makes posting idempotent.
 */

/** Why a document cannot be journalled as it is (the poster reports it and retries next round). */
export class JournalDerivationError extends Error {
  override name = "JournalDerivationError";
  constructor(
    readonly code: "unmapped_account" | "not_finalized" | "unbalanced",
    message: string,
  ) {
    super(message);
  }
}

/** Deterministic entry id: `je_` + 24 hex of SHA-256 over what the entry records. */
export function entryId(...parts: string[]): string {
  return `je_${createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 24)}`;
}

export const documentEntryId = (doc: Pick<Invoice, "id" | "kind">) => entryId(doc.kind ?? "invoice", doc.id);
export const paymentEntryId = (invoice: string, stripeInvoice: string) =>
  entryId("payment", invoice, stripeInvoice);
export const recognitionEntryId = (document: string, date: string) => entryId("recognition", document, date);

/** `YYYY-MM-DD` of an instant in the accounting zone. */
export function dayIn(ms: number, tz: string): string {
  return DateTime.fromMillis(ms, { zone: tz }).toISODate()!;
}

/** The last day (`YYYY-MM-DD`) of a month `YYYY-MM`. */
export function lastDayOf(month: string): string {
  const [y, m] = month.split("-").map(Number) as [number, number];
  return DateTime.utc(y, m, 1).endOf("month").toISODate()!;
}

/**
 * The accounting date of a document: the day (in the accounting zone) of
 * `min(finalized_at, period.end − 1 ms)`. Tally bills in arrears and finalizes after a grace
 * period, so a November invoice finalized on December 1 is dated November 30.
 */
export function documentDate(doc: Pick<Invoice, "finalized_at" | "period">, tz: string): string {
  if (doc.finalized_at === null)
    throw new JournalDerivationError("not_finalized", "document is not finalized");
  return dayIn(Math.min(Date.parse(doc.finalized_at), Date.parse(doc.period.end) - 1), tz);
}

/** One calendar month (in the accounting zone) of a service period. */
export interface MonthSlice {
  /** `YYYY-MM`. */
  month: string;
  fromMs: number;
  toMs: number;
}

/** Month starts by zone and month (`<tz>|<y>-<m>`): a few hundred at most, each a luxon call saved. */
const monthStarts = new Map<string, number>();

function monthStart(tz: string, y: number, m: number): number {
  const k = `${tz}|${y}-${m}`;
  let v = monthStarts.get(k);
  if (v === undefined) {
    // Local midnight of the 1st; where a zone skips that midnight, luxon moves it forward, as
    // `startOf("month")` does for the usage API's month windows.
    v = DateTime.fromObject({ year: y, month: m, day: 1 }, { zone: tz }).toMillis();
    monthStarts.set(k, v);
  }
  return v;
}

/**
 * The calendar months (accounting zone) a half-open period touches, each clipped to the period.
 * The same windows as the usage API's `window=month` (`windowsOf`), with each month start
 * computed once per zone: the poster slices every line of every document.
 */
export function monthsOf(period: LinePeriod, tz: string): MonthSlice[] {
  const from = Date.parse(period.start);
  const to = Date.parse(period.end);
  const first = DateTime.fromMillis(from, { zone: tz });
  let y = first.year;
  let m = first.month;
  const label = () => `${String(y).padStart(4, "0")}-${String(m).padStart(2, "0")}`;
  if (!(to > from)) return [{ month: label(), fromMs: from, toMs: from }];
  const out: MonthSlice[] = [];
  for (let s = from; s < to;) {
    const ny = m === 12 ? y + 1 : y;
    const nm = m === 12 ? 1 : m + 1;
    const next = monthStart(tz, ny, nm);
    out.push({ month: label(), fromMs: s, toMs: Math.min(next, to) });
    s = next;
    y = ny;
    m = nm;
  }
  return out;
}

/**
 * Splits an integer amount in proportion to non-negative weights, exactly: each share is rounded
 * down, and the units left over go to the largest remainders (ties to the earlier share), so the
 * shares sum to the amount. A negative amount is split as its absolute value, then negated.
 * Null when the weights cannot split anything (none positive, or one negative).
 */
export function allocate(amount: number, weights: readonly bigint[]): number[] | null {
  if (weights.some((w) => w < 0n)) return null;
  const total = weights.reduce((a, w) => a + w, 0n);
  if (total === 0n) return null;
  const sign = amount < 0 ? -1 : 1;
  const abs = BigInt(Math.abs(amount));
  const shares = weights.map((w) => (abs * w) / total);
  let left = abs - shares.reduce((a, s) => a + s, 0n);
  const order = weights
    .map((w, i) => ({ i, r: (abs * w) % total }))
    .sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of order) {
    if (left === 0n) break;
    shares[i]! += 1n;
    left -= 1n;
  }
  return shares.map((s) => Number(sign < 0 ? -s : s));
}

/** An exact decimal string (`12`, `-0.5`, `3.250`) as an integer scaled by 10^scale. */
function scaled(s: string, scale: number): bigint | null {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(s);
  if (m === null) return null;
  const frac = (m[3] ?? "").padEnd(scale, "0");
  if (frac.length > scale) return null;
  const v = BigInt(`${m[2]}${frac}`);
  return m[1] === "-" ? -v : v;
}

/** Decimal quantities as integer weights on one common scale; null when one is not a plain decimal. */
export function decimalWeights(quantities: readonly string[]): bigint[] | null {
  const scale = Math.max(0, ...quantities.map((q) => q.split(".")[1]?.length ?? 0));
  const out = quantities.map((q) => scaled(q, scale));
  return out.some((w) => w === null) ? null : (out as bigint[]);
}

/** One line's amount for one month of its service period. */
export interface LinePart {
  month: string;
  period: LinePeriod;
  amount: number;
}

/**
 * A line's amount by calendar month of its service period. Usage lines by the usage of each
 * month (`usageByMonth`: one quantity per month of {@link monthsOf}, read with the invoice's
 * cutoff); every other line (flat, seat, commitment, cap, discount), and a usage line whose
 * monthly usage cannot split it (no usage in any month, or a negative difference), by time.
 */
export function lineParts(line: InvoiceLine, tz: string, usageByMonth?: readonly string[]): LinePart[] {
  const months = monthsOf(line.period, tz);
  const iso = (ms: number) => new Date(ms).toISOString();
  const at = (amounts: readonly number[]) =>
    months.map((m, k) => ({
      month: m.month,
      period: { start: iso(m.fromMs), end: iso(m.toMs) },
      amount: amounts[k]!,
    }));
  if (months.length === 1) return at([line.amount]);
  if (line.kind === "usage" && usageByMonth !== undefined && usageByMonth.length === months.length) {
    const w = decimalWeights(usageByMonth);
    const split = w === null ? null : allocate(line.amount, w);
    if (split !== null) return at(split);
  }
  return at(
    allocate(
      line.amount,
      months.map((m) => BigInt(m.toMs - m.fromMs)),
    )!,
  );
}

/** The account a document line is booked to, or why none. */
export function lineAccount(line: InvoiceLine, chart: Accounts): string {
  let account: string | undefined;
  switch (line.kind) {
    case "discount":
      account = chart.discounts;
      break;
    case "minimum_commitment":
      account = chart.minimum_commitment ?? chart.revenue;
      break;
    case "spend_cap":
      account = chart.spend_cap ?? chart.revenue;
      break;
    case "flat":
    case "seat":
    case "usage":
      account = line.price === null ? chart.revenue : priceAccount(chart, line.plan, line.price);
      break;
  }
  if (account === undefined) {
    throw new JournalDerivationError(
      "unmapped_account",
      `line ${line.number} (${line.kind}, plan ${line.plan}, price ${line.price ?? "-"}) has no account: map the price in the catalog's accounts.prices or set accounts.revenue`,
    );
  }
  return account;
}

/** A line of `amount` on `account`: positive amounts on the `side` given, negative on the other. */
function booked(
  account: string,
  amount: number,
  side: "debit" | "credit",
  rest: Omit<JournalLine, "account" | "debit" | "credit">,
): JournalLine {
  const positiveDebit = side === "debit" ? amount > 0 : amount < 0;
  return {
    account,
    debit: positiveDebit ? Math.abs(amount) : 0,
    credit: positiveDebit ? 0 : Math.abs(amount),
    ...rest,
  };
}

/** What a derivation needs besides the document. */
export interface DeriveOptions {
  /** IANA zone of the books (TALLY_ACCOUNTING_TIMEZONE). */
  timezone: string;
  chart: Accounts;
  chartVersion?: number;
  /** Usage lines spanning months: quantity per month of the line's period, by document line number. */
  usageByMonth?: ReadonlyMap<number, readonly string[]>;
  postedAt: string;
}

/**
 * The entry of a finalized invoice (kind `invoice`) or credit note (kind `credit_note`, its
 * reversing entry: the same rule with the signs of its negative lines). Receivable for the
 * total; each line's months up to the entry's month on its revenue account (discounts debit
 * contra-revenue, negative lines debit revenue); later months on deferred revenue, one line
 * per revenue account and month, recognized by {@link recognitionEntries}.
 */
export function documentEntry(doc: Invoice, o: DeriveOptions): JournalEntry {
  if (doc.status !== "finalized" || doc.number === null)
    throw new JournalDerivationError("not_finalized", `document ${doc.id} is not finalized`);
  const date = documentDate(doc, o.timezone);
  const entryMonth = date.slice(0, 7);
  const lines: JournalLine[] = [];
  const kind = doc.kind ?? "invoice";
  if (doc.total !== 0) {
    lines.push(
      booked(o.chart.receivable, doc.total, "debit", {
        description: `Accounts receivable ${doc.number}`,
        service_period: null,
      }),
    );
  }
  const deferred = new Map<
    string,
    { account: string; month: string; amount: number; from: number; to: number }
  >();
  for (const line of doc.lines) {
    if (line.amount === 0) continue;
    const account = lineAccount(line, o.chart);
    for (const part of lineParts(line, o.timezone, o.usageByMonth?.get(line.number))) {
      if (part.amount === 0) continue;
      if (part.month <= entryMonth) {
        lines.push(
          booked(account, part.amount, "credit", {
            description: line.description,
            service_period: part.period,
            document_line: line.number,
          }),
        );
        continue;
      }
      const k = `${account}\u0000${part.month}`;
      const d = deferred.get(k) ?? { account, month: part.month, amount: 0, from: Infinity, to: -Infinity };
      d.amount += part.amount;
      d.from = Math.min(d.from, Date.parse(part.period.start));
      d.to = Math.max(d.to, Date.parse(part.period.end));
      deferred.set(k, d);
    }
  }
  for (const d of [...deferred.values()].sort((a, b) =>
    a.month === b.month ? (a.account < b.account ? -1 : 1) : a.month < b.month ? -1 : 1,
  )) {
    if (d.amount === 0) continue;
    lines.push(
      booked(o.chart.deferred_revenue, d.amount, "credit", {
        description: `Deferred revenue (${d.account}) for ${d.month}`,
        service_period: { start: new Date(d.from).toISOString(), end: new Date(d.to).toISOString() },
        revenue_account: d.account,
        recognize_on: lastDayOf(d.month),
      }),
    );
  }
  const what = kind === "credit_note" ? "Credit note" : "Invoice";
  const entry: JournalEntry = {
    id: documentEntryId(doc),
    kind,
    date,
    currency: doc.currency,
    currency_exponent: doc.currency_exponent,
    customer: doc.customer,
    document: doc.id,
    document_number: doc.number,
    narration: `${what} ${doc.number}, customer ${doc.customer}, period ${doc.period.start.slice(0, 10)} to ${doc.period.end.slice(0, 10)}`,
    lines,
    posted_at: o.postedAt,
    ...(o.chartVersion !== undefined ? { chart_version: o.chartVersion } : {}),
  };
  assertBalanced(entry);
  return entry;
}

/**
 * The recognition entries of a document entry's deferred revenue: one per `recognize_on` day
 * (the last day of each later service month), moving each deferred line to its revenue account.
 * Derived from the posted entry alone, so a changed chart or zone never changes them.
 */
export function recognitionEntries(doc: JournalEntry, postedAt: string): JournalEntry[] {
  const byDay = new Map<string, JournalLine[]>();
  for (const l of doc.lines) {
    if (l.recognize_on === undefined || l.revenue_account === undefined) continue;
    const lines = byDay.get(l.recognize_on) ?? [];
    const rest = { description: l.description, service_period: l.service_period };
    // Reverse the deferral, and book the same amount on the revenue account with the sides swapped.
    lines.push({
      account: l.account,
      debit: l.credit,
      credit: l.debit,
      ...rest,
      revenue_account: l.revenue_account,
    });
    lines.push({ account: l.revenue_account, debit: l.debit, credit: l.credit, ...rest });
    byDay.set(l.recognize_on, lines);
  }
  return [...byDay.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([day, lines]) => {
      const e: JournalEntry = {
        id: recognitionEntryId(doc.document, day),
        kind: "recognition",
        date: day,
        currency: doc.currency,
        currency_exponent: doc.currency_exponent,
        customer: doc.customer,
        document: doc.document,
        document_number: doc.document_number,
        narration: `Revenue recognized for ${day.slice(0, 7)} from ${doc.document_number}`,
        lines,
        posted_at: postedAt,
        recognizes: doc.id,
        ...(doc.chart_version !== undefined ? { chart_version: doc.chart_version } : {}),
      };
      assertBalanced(e);
      return e;
    });
}

/** A payment Stripe reported for one Stripe invoice of a Tally invoice. */
export interface RecordedPayment {
  stripe_invoice: string;
  event: string;
  /** Epoch seconds of the event. */
  event_created: number;
  /** Minor units paid. */
  amount: number;
}

/** The entry of a payment: debit cash, credit receivable, dated the day of the event. */
export function paymentEntry(
  doc: Invoice,
  pay: RecordedPayment,
  o: Pick<DeriveOptions, "timezone" | "chart" | "chartVersion" | "postedAt">,
): JournalEntry | null {
  if (pay.amount === 0 || doc.number === null) return null;
  const period = null;
  const entry: JournalEntry = {
    id: paymentEntryId(doc.id, pay.stripe_invoice),
    kind: "payment",
    date: dayIn(pay.event_created * 1000, o.timezone),
    currency: doc.currency,
    currency_exponent: doc.currency_exponent,
    customer: doc.customer,
    document: doc.id,
    document_number: doc.number,
    narration: `Payment of ${doc.number} (Stripe ${pay.stripe_invoice})`,
    lines: [
      booked(o.chart.cash, pay.amount, "debit", {
        description: `Stripe payment ${pay.stripe_invoice}`,
        service_period: period,
      }),
      booked(o.chart.receivable, pay.amount, "credit", {
        description: `Accounts receivable ${doc.number}`,
        service_period: period,
      }),
    ],
    posted_at: o.postedAt,
    payment: { stripe_invoice: pay.stripe_invoice, event: pay.event },
    ...(o.chartVersion !== undefined ? { chart_version: o.chartVersion } : {}),
  };
  assertBalanced(entry);
  return entry;
}

/**
 * Invariant 11 (books balance): every line has exactly one positive side in integer minor units,
 * and debits equal credits. Checked on every entry derived, before anything is stored.
 */
export function assertBalanced(e: JournalEntry): void {
  let debit = 0;
  let credit = 0;
  for (const l of e.lines) {
    const ok =
      Number.isSafeInteger(l.debit) &&
      Number.isSafeInteger(l.credit) &&
      l.debit >= 0 &&
      l.credit >= 0 &&
      l.debit > 0 !== l.credit > 0;
    if (!ok)
      throw new JournalDerivationError(
        "unbalanced",
        `entry ${e.id}: line on ${l.account} is not one positive side`,
      );
    debit += l.debit;
    credit += l.credit;
  }
  if (debit !== credit)
    throw new JournalDerivationError(
      "unbalanced",
      `entry ${e.id} does not balance: debits ${debit}, credits ${credit}`,
    );
}
