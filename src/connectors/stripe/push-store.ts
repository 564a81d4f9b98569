import type { JetStreamClient, KV } from "nats";
import pMap from "p-map";
import { readJson, updateJson } from "../../lib/kv.js";

/** Where one Tally invoice's push stands: each step is recorded once Stripe answered it. */
export type PushStep = "none" | "created" | "lines_added" | "finalized" | "verified";

/**
 * - `pending`: not done yet (new, or resuming after a crash);
 * - `pushed`: every part verified: Stripe's totals equal Tally's to the minor unit;
 * - `push_failed`: the last attempt failed (see `last_error`); retried after `next_attempt_at`;
 * - `mismatch`: pushed, but Stripe's total differs from Tally's: an alert, never retried
 *   automatically (a person must look: someone edited the Stripe draft, or a currency's minor unit differs);
 *   `pending` with `last_error.code` `waiting_for_credited_invoice`: a credit note whose credited
 *   invoice is not pushed yet; every run looks again;
 * - `skipped`: deliberately not pushed (`skip_reason`), e.g. an invoice without lines.
 */
export type PushStatus = "pending" | "pushed" | "push_failed" | "mismatch" | "skipped";

/** One Stripe invoice of a Tally invoice (several when it has more lines than Stripe allows). */
export interface PushPart {
  part: number;
  stripe_invoice: string | null;
  /** `add_lines` requests recorded as answered (chunks are fixed by the plan). */
  chunks_added: number;
  chunks: number;
  finalized: boolean;
  /** Stripe's status and total as last read back. */
  stripe_status: string | null;
  stripe_number: string | null;
  stripe_total: number | null;
  expected_total: number;
}

/**
 * One Stripe credit note of a Tally credit note (see credit-notes.ts for how they are split): planned
 * once, from the credited invoices' Stripe invoices as they stood, and kept in the record so every
 * retry sends the same parameters under the same key.
 */
export interface CreditNotePush {
  /** 1-based; the idempotency key is `tally:<credit note>:credit_note:<k>`. */
  k: number;
  /** The credited Tally invoice and which of its Stripe parts. */
  invoice: string;
  part: number;
  stripe_invoice: string;
  /** Positive, minor units: what this Stripe credit note credits. */
  amount: number;
  /** The part of `amount` beyond the Stripe invoice's `amount_remaining`: to the customer's balance. */
  credit_amount: number;
  /** Tally lines (a line split across parts appears on each, with its share). */
  lines: { line: number; amount: number; description: string }[];
  stripe_credit_note: string | null;
  stripe_total: number | null;
}

/** The push record of one Tally invoice (`push.<invoice id>`); the invoice itself is never changed. */
export interface StripePush {
  invoice: string;
  number: string | null;
  customer: string;
  stripe_customer: string | null;
  currency: string;
  expected_total: number;
  /** Fixed at the first attempt so every retry sends the same create parameters (idempotency). */
  collection: { method: "charge_automatically" | "send_invoice"; days_until_due: number | null } | null;
  step: PushStep;
  status: PushStatus;
  parts: PushPart[];
  attempts: number;
  last_error: { code: string; message: string; at: string } | null;
  next_attempt_at: string | null;
  skip_reason: string | null;
  created_at: string;
  updated_at: string;
  pushed_at: string | null;
  /** Absent on invoices; `credit_note` for Tally credit notes. */
  kind?: "invoice" | "credit_note";
  /** Credit notes: the Stripe credit notes, once planned (`parts` stays empty). */
  credit_notes?: CreditNotePush[];
}

/** Payment state of one Stripe invoice as its webhooks said, newest meaningful event winning. */
export interface PaymentState {
  status: "open" | "payment_failed" | "paid" | "void" | "uncollectible";
  event: string;
  /** The event's `created` (epoch seconds). */
  event_created: number;
  /**
   * `invoice.paid`: the invoice's `amount_paid` in the event (minor units): what the journal's
   * payment entry receives. Less than the total when a credit note reduced it before payment.
   */
  amount_paid?: number;
}

/** What Stripe's webhooks said about the Stripe invoices of one Tally invoice (`payments.<invoice id>`). */
export interface StripePayments {
  invoice: string;
  /** By Stripe invoice id. */
  parts: Record<string, PaymentState & { part: number | null }>;
  /** Ids of events already applied, newest last (bounded): a redelivery is recognised and ignored. */
  events: string[];
  updated_at: string;
}

/** Thrown when a compare-and-set lost to another writer. */
export class PushConflict extends Error {
  override name = "PushConflict";
}

/**
 * Push records in their own NATS KV bucket (`<prefix>_push`), outside the invoice record (a
 * finalized invoice never changes). Every change is a compare-and-set on the revision read, as
 * in InvoiceStore, so two pushers (the close role and `tally push stripe`) never overwrite each
 * other's progress, and the webhook writes a separate key so it never races the pusher.
 */
export class PushStore {
  private constructor(private readonly kv: KV) {}

  static async open(js: JetStreamClient, bucket: string, replicas: number): Promise<PushStore> {
    return new PushStore(await js.views.kv(bucket, { history: 5, replicas }));
  }

  async get(invoice: string): Promise<StripePush | null> {
    return (await this.read<StripePush>(`push.${invoice}`))?.value ?? null;
  }

  async payments(invoice: string): Promise<StripePayments | null> {
    return (await this.read<StripePayments>(`payments.${invoice}`))?.value ?? null;
  }

  /**
   * Reads the push record, applies `fn` and writes the result if nothing changed in between;
   * re-reads and re-applies on a lost race. `fn` returning null writes nothing.
   */
  update(invoice: string, fn: (cur: StripePush | null) => StripePush | null): Promise<StripePush | null> {
    return this.cas(`push.${invoice}`, fn);
  }

  updatePayments(
    invoice: string,
    fn: (cur: StripePayments | null) => StripePayments | null,
  ): Promise<StripePayments | null> {
    return this.cas(`payments.${invoice}`, fn);
  }

  /** Removes a push record (tests of lost local state; an operator resetting a push). */
  async forget(invoice: string): Promise<void> {
    await this.kv.purge(`push.${invoice}`);
  }

  /** Every push record (for listings by status). */
  async all(): Promise<StripePush[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys("push.*")) keys.push(k);
    const read = await pMap(keys, (k) => this.read<StripePush>(k), { concurrency: 64 });
    return read.flatMap((r) => (r === null ? [] : [r.value]));
  }

  private read<T>(key: string): Promise<{ value: T; revision: number } | null> {
    return readJson<T>(this.kv, key);
  }

  private cas<T>(key: string, fn: (cur: T | null) => T | null): Promise<T | null> {
    return updateJson(this.kv, key, fn, { maxAttempts: 21, conflict: (m) => new PushConflict(m) });
  }
}
