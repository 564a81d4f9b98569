import { stringify } from "csv-stringify/sync";
import type { Accounts } from "../catalog/index.js";
import { minorToDecimal } from "../rating/index.js";
import { dayIn, lastDayOf, recognitionEntryId } from "./derive.js";
import type { JournalEntry } from "./journal.js";
import type { JournalStore } from "./store.js";

/** `YYYY-MM` with a real month. */
export const monthPattern = /^(\d{4})-(0[1-9]|1[0-2])$/;

/** One revenue (or contra-revenue) account of one currency in a month; amounts in minor units. */
export interface RevenueRow {
  currency: string;
  currency_exponent: number;
  account: string;
  role: "revenue" | "contra_revenue";
  /** Revenue earned in the month (lines whose service period is in it, from any posted entry). */
  recognized: number;
  /** Revenue posted in the month (lines of entries dated in it; differs from `recognized` by catch-ups). */
  posted: number;
  /** Billed in the month: revenue and deferred revenue of invoices and credit notes dated in it. */
  billed: number;
  /** Deferred revenue for this account still to recognize at the month's end. */
  deferred_balance: number;
}

export interface RevenueReport {
  month: string;
  timezone: string;
  data: RevenueRow[];
  /** Per currency: the rows summed (contra-revenue counts negative: net revenue). */
  totals: Omit<RevenueRow, "account" | "role">[];
  entries: number;
}

/** What a report for `month` reads from the journal (see {@link loadRevenueInputs}). */
export interface RevenueInputs {
  /** Entries dated in the month. */
  dated: readonly JournalEntry[];
  /** Entries with revenue lines for service in the month (any date). */
  service: readonly JournalEntry[];
  /** Entries with deferred-revenue lines dated at or before the month's end. */
  deferred: readonly JournalEntry[];
}

/** Reads from the journal exactly what {@link revenueReport} needs for `month`. */
export async function loadRevenueInputs(journal: JournalStore, month: string): Promise<RevenueInputs> {
  const end = lastDayOf(month);
  const [{ dated, service }, deferrals] = await Promise.all([journal.forMonth(month), journal.deferrals()]);
  const deferred: JournalEntry[] = [];
  for (const d of deferrals) {
    const doc = await journal.get(d.entry);
    if (doc === null || doc.date > end) continue;
    deferred.push(doc);
    for (const day of d.days) {
      if (day > end) continue;
      const r = await journal.get(recognitionEntryId(doc.document, day));
      if (r !== null) deferred.push(r);
    }
  }
  return { dated, service, deferred };
}

/**
 * Recognized, posted, billed and deferred revenue of one month per currency and account,
 * computed from posted entries only, so it reconciles with the journal exactly.
 */
export function revenueReport(
  month: string,
  timezone: string,
  chart: Accounts,
  input: RevenueInputs,
): RevenueReport {
  const end = lastDayOf(month);
  const nonRevenue = new Set([chart.receivable, chart.cash, chart.deferred_revenue]);
  const rows = new Map<string, RevenueRow>();
  const row = (e: JournalEntry, account: string) => {
    const k = `${e.currency}\u0000${account}`;
    let r = rows.get(k);
    if (r === undefined) {
      r = {
        currency: e.currency,
        currency_exponent: e.currency_exponent,
        account,
        role: account === chart.discounts ? "contra_revenue" : "revenue",
        recognized: 0,
        posted: 0,
        billed: 0,
        deferred_balance: 0,
      };
      rows.set(k, r);
    }
    return r;
  };
  const isRevenue = (account: string) => !nonRevenue.has(account);
  const seen = new Set<string>();
  for (const e of [...input.dated, ...input.service]) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    for (const l of e.lines) {
      if (!isRevenue(l.account) || l.service_period === null) continue;
      if (dayIn(Date.parse(l.service_period.start), timezone).slice(0, 7) === month)
        row(e, l.account).recognized += l.credit - l.debit;
    }
  }
  for (const e of input.dated) {
    if (e.date.slice(0, 7) !== month) continue;
    for (const l of e.lines) {
      if (isRevenue(l.account)) row(e, l.account).posted += l.credit - l.debit;
      if (e.kind !== "invoice" && e.kind !== "credit_note") continue;
      if (isRevenue(l.account)) row(e, l.account).billed += l.credit - l.debit;
      else if (l.account === chart.deferred_revenue && l.revenue_account !== undefined)
        row(e, l.revenue_account).billed += l.credit - l.debit;
    }
  }
  const deferredSeen = new Set<string>();
  for (const e of input.deferred) {
    if (deferredSeen.has(e.id) || e.date > end) continue;
    deferredSeen.add(e.id);
    for (const l of e.lines)
      if (l.account === chart.deferred_revenue && l.revenue_account !== undefined)
        row(e, l.revenue_account).deferred_balance += l.credit - l.debit;
  }
  const data = [...rows.values()].sort((a, b) =>
    a.currency === b.currency ? (a.account < b.account ? -1 : 1) : a.currency < b.currency ? -1 : 1,
  );
  const totals = new Map<string, Omit<RevenueRow, "account" | "role">>();
  for (const r of data) {
    const t = totals.get(r.currency) ?? {
      currency: r.currency,
      currency_exponent: r.currency_exponent,
      recognized: 0,
      posted: 0,
      billed: 0,
      deferred_balance: 0,
    };
    // Contra-revenue lines are debits: credit − debit is already negative, so a plain sum nets them.
    t.recognized += r.recognized;
    t.posted += r.posted;
    t.billed += r.billed;
    t.deferred_balance += r.deferred_balance;
    totals.set(r.currency, t);
  }
  return { month, timezone, data, totals: [...totals.values()], entries: seen.size };
}

/** One line of the journal export (`tally journals export`). */
export interface ExportRow {
  entry_id: string;
  date: string;
  kind: string;
  document_number: string;
  customer: string;
  account: string;
  /** Major units, exact decimal (`12.34`); `0.00` on the other side. */
  debit: string;
  credit: string;
  currency: string;
  service_start: string;
  service_end: string;
  description: string;
}

export const exportColumns: readonly (keyof ExportRow)[] = [
  "entry_id",
  "date",
  "kind",
  "document_number",
  "customer",
  "account",
  "debit",
  "credit",
  "currency",
  "service_start",
  "service_end",
  "description",
];

export function exportRows(entries: readonly JournalEntry[]): ExportRow[] {
  return entries.flatMap((e) =>
    e.lines.map((l) => ({
      entry_id: e.id,
      date: e.date,
      kind: e.kind,
      document_number: e.document_number,
      customer: e.customer,
      account: l.account,
      debit: minorToDecimal(l.debit, e.currency_exponent),
      credit: minorToDecimal(l.credit, e.currency_exponent),
      currency: e.currency,
      service_start: l.service_period?.start ?? "",
      service_end: l.service_period?.end ?? "",
      description: l.description,
    })),
  );
}

/** The export as CSV (RFC 4180 quoting by csv-stringify; a header row). */
export function exportCsv(entries: readonly JournalEntry[]): string {
  return stringify(exportRows(entries), { header: true, columns: exportColumns as string[] });
}
