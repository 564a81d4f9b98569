import type { LineItem, LinePeriod } from "../rating/index.js";
import type { RatingRecord } from "./build.js";

/**
 * What one metered quantity was read from (invariant 10: every number is explainable): the meter
 * version, the bitemporal cut (event time in the service period, received at or before `cutoff`),
 * the watermark the read was complete up to, how many events it counted and an
 * order-independent digest of their ids that anyone can recompute through the API.
 */
export interface UsageSnapshot {
  meter: string;
  meter_version: number;
  /** Events received after this instant are not in the quantity (they become true-ups). */
  cutoff: string;
  /** The read was complete up to this instant (always at or after `cutoff`). */
  watermark: string;
  quantity: string;
  event_count: number;
  /** Hex digest of the exact event ids counted (see `idDigest`). */
  id_digest: string;
}

/** One line of a stored invoice: a rated line plus where its numbers came from. */
export interface InvoiceLine extends LineItem {
  /** 1-based position on the invoice, stable forever (the Stripe push and journals refer to it). */
  readonly number: number;
  /** Usage lines: the snapshot behind the quantity. */
  readonly snapshot?: UsageSnapshot;
  /** True-up lines: late events of an earlier period, billed with that period as service period. */
  readonly true_up?: {
    /** The invoice that billed the period first. */
    readonly invoice: string;
    readonly billed_quantity: string;
    readonly billed_amount: number;
  };
}

/** An invoice's lifecycle: drafts may be rebuilt; a finalized invoice never changes. */
export type InvoiceStatus = "draft" | "finalized";

/** A stored invoice (snake_case: a wire format, like the rating output it carries). */
export interface Invoice {
  /** Deterministic from the subscription and the period start, so a re-run close finds it. */
  readonly id: string;
  readonly status: InvoiceStatus;
  /** Gapless per issuer prefix (`TALLY-000042`), assigned at finalization; null on drafts. */
  readonly number: string | null;
  readonly issuer_prefix: string;
  readonly customer: string;
  readonly customer_version: number;
  readonly subscription: string;
  readonly subscription_version: number;
  /** Plans billed (several after a plan change), with the versions used. */
  readonly plans: readonly { readonly key: string; readonly version: number }[];
  readonly currency: string;
  readonly currency_exponent: number;
  /** The billing period `[start, end)`. */
  readonly period: LinePeriod;
  /** The usage snapshot's cutoff (see {@link UsageSnapshot.cutoff}). */
  readonly cutoff: string;
  readonly lines: readonly InvoiceLine[];
  /** How the period was rated (plans by version, quantities, seats): a true-up rates it again. */
  readonly rating: RatingRecord;
  /**
   * Earlier periods trued up on this invoice, with the quantities they are now billed at (per
   * segment, by meter): the next true-up of such a period starts from these.
   */
  readonly true_ups: readonly {
    readonly invoice: string;
    readonly usage: readonly Record<string, string>[];
  }[];
  readonly subtotal: number;
  readonly total: number;
  readonly created_at: string;
  readonly finalized_at: string | null;
}
