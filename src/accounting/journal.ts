import type { LinePeriod } from "../rating/index.js";

/*
 * The double-entry journal (issue 12): the contract between the journal (src/accounting), the
 * Xero push (src/connectors/xero) and reconciliation. Amounts are integer minor units of the
 * entry's currency; every entry balances (sum of debits = sum of credits) and is immutable once
 * posted: a correction is a new entry.
 */

/** Why an entry exists. */
export type JournalEntryKind =
  /** A finalized invoice: debit receivable, credit revenue (and deferred revenue) per account. */
  | "invoice"
  /** A finalized credit note: the reversing entry of what it credits. */
  | "credit_note"
  /** A payment recorded from Stripe: debit cash, credit receivable. */
  | "payment"
  /** Deferred revenue recognized in a later month: debit deferred revenue, credit revenue. */
  | "recognition";

/** One line of an entry: exactly one of `debit` and `credit` is positive, the other 0. */
export interface JournalLine {
  /** Account code from the catalog's `accounts:` section. */
  readonly account: string;
  readonly debit: number;
  readonly credit: number;
  readonly description: string;
  /** The service period the amount is for (revenue and deferred lines), else null. */
  readonly service_period: LinePeriod | null;
  /** The document line (1-based `InvoiceLine.number`) the amount comes from, when one does. */
  readonly document_line?: number;
  /**
   * Deferred-revenue lines only (added by the journal): the revenue (or contra-revenue) account
   * the amount moves to when recognized, and the day that happens (the last day of the
   * service month, `YYYY-MM-DD`): the `recognition` entry of that day reverses this line.
   */
  readonly revenue_account?: string;
  readonly recognize_on?: string;
}

/** One posted journal entry (snake_case: a wire format, exported as JSON and CSV). */
export interface JournalEntry {
  /** Deterministic from what it records (`je_<hex>`), so posting twice stores it once. */
  readonly id: string;
  readonly kind: JournalEntryKind;
  /** Accounting date `YYYY-MM-DD`. */
  readonly date: string;
  readonly currency: string;
  readonly currency_exponent: number;
  readonly customer: string;
  /** The Tally invoice or credit note the entry comes from. */
  readonly document: string;
  /** Its number (`TALLY-000042`, `TALLY-CN-000001`). */
  readonly document_number: string;
  readonly narration: string;
  readonly lines: readonly JournalLine[];
  readonly posted_at: string;
  /** The catalog chart-of-accounts version the entry was derived with (added by the journal). */
  readonly chart_version?: number;
  /** `recognition` entries: the id of the document entry whose deferred revenue they recognize. */
  readonly recognizes?: string;
  /** `payment` entries: the Stripe invoice paid and the webhook event that said so. */
  readonly payment?: { readonly stripe_invoice: string; readonly event: string };
}

/** Read access to posted entries (the Xero push and reconciliation read through this). */
export interface JournalReader {
  get(id: string): Promise<JournalEntry | null>;
  /** Every entry of one Tally document (its invoice/credit-note entry, recognitions, payments). */
  forDocument(document: string): Promise<JournalEntry[]>;
  /** Entries whose `date` is in `[from, to]` (inclusive `YYYY-MM-DD`), in date then id order. */
  list(range: { from: string; to: string }): Promise<JournalEntry[]>;
}
