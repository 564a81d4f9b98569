/*
 * Rating output: invoice line items a finance team can audit. Field names are snake_case because
 * this is a wire format (JSON on stdout, pushed to Stripe and accounting), like the plan file.
 *
 * Convention: a field named `amount` (or ending in `_amount` without `_decimal`) is an integer
 * number of minor units; a field ending in `_decimal` is an exact decimal string of minor units
 * (may be fractional, e.g. "0.05" = five hundredths of a cent); quantities are exact decimal strings.
 */

/** What a line is for. */
export type LineKind = "flat" | "seat" | "usage" | "discount" | "minimum_commitment" | "spend_cap";

/** A half-open time range `[start, end)` as ISO 8601 UTC strings. */
export interface LinePeriod {
  readonly start: string;
  readonly end: string;
}

/** How one tier of a tiered price contributed to a line (before the line's single rounding). */
export interface TierBreakdown {
  /** 1-based tier number, in the order of the plan's `tiers`. */
  readonly tier: number;
  /** Lower bound (exclusive, except that the first tier starts at and includes 0). */
  readonly from: string;
  /** Upper bound (inclusive), or `"inf"`. */
  readonly up_to: string;
  /** Units priced in this tier (graduated: the units that fall in it; volume: all units). */
  readonly quantity: string;
  readonly unit_amount_decimal: string;
  readonly flat_amount_decimal: string;
  /** `quantity × unit_amount_decimal + flat_amount_decimal`, exact, unrounded. */
  readonly amount_decimal: string;
}

/** Time-based proration of a flat or seat line, or of a prorated commitment, cap or fixed discount. */
export interface Proration {
  /** Seconds the line covers (decimal string; milliseconds are kept exactly). */
  readonly seconds: string;
  /** Seconds in the whole billing period. */
  readonly period_seconds: string;
}

/** Details of a discount line. */
export interface DiscountDetail {
  readonly key: string;
  readonly percent_off?: string;
  /** The fixed amount off per full period, before proration. */
  readonly amount_off?: number;
  /** The amount the discount was computed on (never discounted below zero). */
  readonly base_amount: number;
  /** `price` when it applies to one price's lines, `plan` when to everything billed under the plan. */
  readonly scope: "price" | "plan";
}

/** One line of a rated invoice. */
export interface LineItem {
  readonly kind: LineKind;
  /** Key of the plan the line is billed under. */
  readonly plan: string;
  /** Key of the price, for price lines and price-scoped discounts; otherwise null. */
  readonly price: string | null;
  /** Meter key, for usage lines; otherwise null. */
  readonly meter: string | null;
  readonly description: string;
  /** The part of the billing period this line covers. */
  readonly period: LinePeriod;
  /** Exact decimal string: usage, seats, or "1". */
  readonly quantity: string;
  /**
   * Per-unit (or per-package) amount for per-unit prices; null for tiered prices (see `tiers`)
   * and for discount, commitment and cap lines.
   */
  readonly unit_amount_decimal: string | null;
  /** Integer minor units; negative for discounts and cap adjustments. A safe integer. */
  readonly amount: number;
  /** Usage lines with an included quantity: the free allowance for this line. */
  readonly included_quantity?: string;
  /** Usage lines with an included quantity: `max(0, quantity − included_quantity)`, what is priced. */
  readonly billable_quantity?: string;
  /** Prices with `transform_quantity`: whole packages billed. */
  readonly packages?: string;
  /** Tiered prices: the tiers that contributed. */
  readonly tiers?: readonly TierBreakdown[];
  /** Present when the amount was prorated by time. */
  readonly proration?: Proration;
  /** Discount lines only. */
  readonly discount?: DiscountDetail;
  /** Commitment lines: the (prorated) commitment and the spend it was compared with. */
  readonly commitment?: { readonly amount: number; readonly spend: number };
  /** Spend-cap lines: the (prorated) cap and the usage charges it was compared with. */
  readonly spend_cap?: { readonly amount: number; readonly usage_amount: number };
}

/** The priced result of one billing period for one subscription. */
export interface RatedInvoice {
  /** Upper-case ISO 4217 code. */
  readonly currency: string;
  /** Minor-unit exponent of the currency (USD 2, JPY 0, KWD 3): `amount / 10^exponent` is in major units. */
  readonly currency_exponent: number;
  readonly period: LinePeriod;
  readonly lines: readonly LineItem[];
  /** Sum of all lines except plan-scoped discounts (Stripe's `subtotal`: price discounts are included). */
  readonly subtotal: number;
  /** Sum of all lines. Never negative. */
  readonly total: number;
}
