import { currencyOf } from "./currency.js";
import type { Currency } from "./currency.js";
import { dec, divRound, fmt, isZero, ZERO } from "./decimal.js";
import type { Decimal } from "./decimal.js";
import { addFixed, cmpFixed, divRoundFixed, fmtFixed, mulFixed, parseCanonical, subFixed } from "./fixed.js";
import type { Fixed } from "./fixed.js";
import { validatePlan } from "./parse.js";
import type { Discount, Interval, Plan, PlanInput, Price, Tier } from "./plan-schema.js";
import type { TierBreakdown } from "./types.js";

/*
 * A plan compiled once into exact decimals, so rating a customer does only the arithmetic the
 * invoice needs (for 100k customers that is the difference between parsing every tier 100k times
 * and not). Compilation validates the plan, so a CompiledPlan is always valid.
 */

interface CompiledTier {
  /** 1-based. */
  readonly number: number;
  readonly from: Decimal;
  readonly fromStr: string;
  /** null for the last (`inf`) tier. */
  readonly upTo: Decimal | null;
  readonly upToStr: string;
  readonly unit: Decimal;
  readonly unitStr: string;
  readonly flat: Decimal;
  readonly flatStr: string;
  /** Graduated: exact amount of every earlier tier, fully consumed, flat amounts included. */
  readonly before: Decimal;
  /** Graduated: this tier fully consumed (null for the last tier). Frozen, shared across lines. */
  readonly full: TierBreakdown | null;
}

interface CompiledDiscount {
  readonly key: string;
  readonly description: string;
  readonly percentOff: Decimal | null;
  readonly percentOffStr: string | null;
  /** Per full period, minor units. */
  readonly amountOff: Decimal | null;
  readonly amountOffNum: number | null;
  readonly duration: Discount["duration"];
  readonly durationInMonths: number | null;
  readonly durationInPeriods: number | null;
  /** Price key, or null for the whole plan. */
  readonly price: string | null;
}

/** A price ready to be evaluated on a quantity. */
export interface CompiledPrice {
  readonly key: string;
  readonly type: Price["type"];
  readonly meter: string | null;
  readonly description: string;
  readonly scheme: "per_unit" | "graduated" | "volume";
  /** per_unit: amount per unit (or per package with `transform`). */
  readonly unit: Decimal;
  readonly unitStr: string | null;
  readonly transform: { readonly divideBy: Decimal; readonly round: "up" | "down" } | null;
  readonly included: Decimal | null;
  readonly includedStr: string | null;
  readonly tiers: readonly CompiledTier[];
  /**
   * The same numbers as safe-integer fixed-point values, for {@link priceFixed}; null when one of
   * them does not fit (the price is then always evaluated with big.js).
   */
  readonly fast: FastPrice | null;
}

/** A price's numbers as {@link Fixed} values (see fixed.ts); `tiers` parallels `CompiledPrice.tiers`. */
interface FastPrice {
  readonly unit: Fixed;
  readonly transform: { readonly divideBy: Fixed; readonly round: "up" | "down" } | null;
  readonly included: Fixed | null;
  readonly tiers: readonly FastTier[];
}

interface FastTier {
  /** Graduated: the `full` rows of the earlier tiers, which head this tier's breakdown. */
  readonly fullBefore: readonly TierBreakdown[];
  readonly from: Fixed;
  readonly upTo: Fixed | null;
  readonly unit: Fixed;
  readonly flat: Fixed;
  readonly before: Fixed;
}

/** A validated plan with its numbers parsed once; build it with {@link compilePlan}. */
export class CompiledPlan {
  readonly plan: Plan;
  readonly key: string;
  readonly currency: Currency;
  readonly interval: Interval;
  readonly intervalCount: number;
  readonly prices: readonly CompiledPrice[];
  /** Meter keys used by this plan's metered prices. */
  readonly meters: ReadonlySet<string>;
  /**
   * Meter key → its index in a usage array (one slot per meter, in order of first use), so rating
   * keeps a subscription's usage in an array rather than a Map.
   */
  readonly meterSlots: ReadonlyMap<string, number>;
  /** The usage slot of each price (parallel to `prices`); -1 for prices without a meter. */
  readonly priceSlots: readonly number[];
  readonly commitment: Decimal | null;
  readonly commitmentDescription: string;
  readonly spendCap: Decimal | null;
  readonly spendCapDescription: string;
  readonly discounts: readonly CompiledDiscount[];
  /** Some discount applies to one price / to the whole plan. */
  readonly hasPriceDiscounts: boolean;
  readonly hasPlanDiscounts: boolean;

  /** @internal use {@link compilePlan}. */
  constructor(plan: Plan) {
    const currency = currencyOf(plan.currency);
    if (currency === undefined) throw new Error(`unreachable: currency ${plan.currency} passed validation`);
    this.plan = plan;
    this.key = plan.key;
    this.currency = currency;
    this.interval = plan.interval;
    this.intervalCount = Number(plan.interval_count);
    this.prices = plan.prices.map(compilePrice);
    this.meters = new Set(this.prices.flatMap((p) => (p.meter === null ? [] : [p.meter])));
    this.meterSlots = new Map([...this.meters].map((m, i) => [m, i]));
    this.priceSlots = this.prices.map((p) => (p.meter === null ? -1 : (this.meterSlots.get(p.meter) ?? -1)));
    this.commitment = plan.minimum_commitment === undefined ? null : dec(plan.minimum_commitment.amount);
    this.commitmentDescription = plan.minimum_commitment?.description ?? "Minimum commitment true-up";
    this.spendCap = plan.spend_cap === undefined ? null : dec(plan.spend_cap.amount);
    this.spendCapDescription = plan.spend_cap?.description ?? "Spend cap adjustment";
    this.discounts = plan.discounts.map(compileDiscount);
    this.hasPriceDiscounts = this.discounts.some((d) => d.price !== null);
    this.hasPlanDiscounts = this.discounts.some((d) => d.price === null);
  }
}

/**
 * Validates a plan and compiles it for rating. Compile each plan once and reuse the result for
 * every customer on it; {@link rate} also accepts a raw plan and compiles it on each call.
 *
 * @throws RatingInputError naming each bad field of the plan.
 * @example
 * ```ts
 * const pro = compilePlan(selectPlan(parseCatalog(yamlText), "pro"));
 * for (const c of customers) invoices.push(rate({ plan: pro, period, usage: c.usage }));
 * ```
 */
export function compilePlan(plan: PlanInput | Plan | CompiledPlan): CompiledPlan {
  if (plan instanceof CompiledPlan) return plan;
  return new CompiledPlan(validatePlan(plan));
}

function amountOf(integer: string | undefined, decimal: string | undefined): string {
  return integer ?? decimal ?? "0";
}

function compileTiers(tiers: readonly Tier[], graduated: boolean): CompiledTier[] {
  const out: CompiledTier[] = [];
  let from = ZERO;
  let fromStr = "0";
  let before = ZERO;
  tiers.forEach((tier, i) => {
    const unitStr = amountOf(tier.unit_amount, tier.unit_amount_decimal);
    const flatStr = amountOf(tier.flat_amount, tier.flat_amount_decimal);
    const unit = dec(unitStr);
    const flat = dec(flatStr);
    const upToStr = tier.up_to === null || tier.up_to === "inf" ? "inf" : tier.up_to;
    const upTo = upToStr === "inf" ? null : dec(upToStr);
    let full: TierBreakdown | null = null;
    let fullAmount = ZERO;
    if (upTo !== null) {
      const quantity = upTo.minus(from);
      fullAmount = quantity.times(unit).plus(flat);
      full = Object.freeze({
        tier: i + 1,
        from: fromStr,
        up_to: upToStr,
        quantity: fmt(quantity),
        unit_amount_decimal: unitStr,
        flat_amount_decimal: flatStr,
        amount_decimal: fmt(fullAmount),
      });
    }
    out.push({ number: i + 1, from, fromStr, upTo, upToStr, unit, unitStr, flat, flatStr, before, full });
    if (graduated) before = before.plus(fullAmount);
    if (upTo !== null) {
      from = upTo;
      fromStr = upToStr;
    }
  });
  return out;
}

function compilePrice(price: Price): CompiledPrice {
  const tiered = price.billing_scheme === "tiered";
  const graduated = tiered && price.tiers_mode === "graduated";
  const unitStr = tiered ? null : amountOf(price.unit_amount, price.unit_amount_decimal);
  const compiled: Omit<CompiledPrice, "fast"> = {
    key: price.key,
    type: price.type,
    meter: price.meter ?? null,
    description: price.nickname ?? price.key,
    scheme: !tiered ? "per_unit" : graduated ? "graduated" : "volume",
    unit: unitStr === null ? ZERO : dec(unitStr),
    unitStr,
    transform:
      price.transform_quantity === undefined
        ? null
        : { divideBy: dec(price.transform_quantity.divide_by), round: price.transform_quantity.round },
    included: price.included_quantity === undefined ? null : dec(price.included_quantity),
    includedStr: price.included_quantity ?? null,
    tiers: tiered ? compileTiers(price.tiers ?? [], graduated) : [],
  };
  return { ...compiled, fast: compileFast(compiled) };
}

/** The fixed-point form of a compiled price, or null if any of its numbers does not fit. */
function compileFast(price: Omit<CompiledPrice, "fast">): FastPrice | null {
  // Every value goes through its canonical text, so it is the same number as the Decimal.
  const fixed = (d: Decimal): Fixed | undefined => parseCanonical(fmt(d));
  const unit = fixed(price.unit);
  const divideBy = price.transform === null ? null : fixed(price.transform.divideBy);
  const included = price.included === null ? null : fixed(price.included);
  if (unit === undefined || divideBy === undefined || included === undefined) return null;
  const transform =
    price.transform === null || divideBy === null ? null : { divideBy, round: price.transform.round };
  const tiers: FastTier[] = [];
  for (const t of price.tiers) {
    const from = fixed(t.from);
    const upTo = t.upTo === null ? null : fixed(t.upTo);
    const tierUnit = fixed(t.unit);
    const flat = fixed(t.flat);
    const before = fixed(t.before);
    if (
      from === undefined ||
      upTo === undefined ||
      tierUnit === undefined ||
      flat === undefined ||
      before === undefined
    ) {
      return null;
    }
    const fullBefore = price.tiers.slice(0, t.number - 1).flatMap((e) => (e.full === null ? [] : [e.full]));
    tiers.push({ fullBefore, from, upTo, unit: tierUnit, flat, before });
  }
  return { unit, transform, included, tiers };
}

function compileDiscount(d: Discount): CompiledDiscount {
  return {
    key: d.key,
    description: d.name ?? d.key,
    percentOff: d.percent_off === undefined ? null : dec(d.percent_off),
    percentOffStr: d.percent_off ?? null,
    amountOff: d.amount_off === undefined ? null : dec(d.amount_off),
    amountOffNum: d.amount_off === undefined ? null : Number(d.amount_off),
    duration: d.duration,
    durationInMonths: d.duration_in_months === undefined ? null : Number(d.duration_in_months),
    durationInPeriods: d.duration_in_periods === undefined ? null : Number(d.duration_in_periods),
    price: d.applies_to?.price ?? null,
  };
}

/** A price evaluated on a quantity, before the line's single rounding. */
export interface PricedQuantity {
  /** Exact, unrounded amount in minor units. */
  readonly amount: Decimal;
  readonly tiers?: readonly TierBreakdown[];
  /** Whole packages, for prices with `transform_quantity`. */
  readonly packages?: Decimal;
}

/** The tier whose range holds `quantity`: the first with `up_to ≥ quantity` (up_to is inclusive). */
function tierFor(tiers: readonly CompiledTier[], quantity: Decimal): CompiledTier {
  for (const tier of tiers) {
    if (tier.upTo === null || quantity.lte(tier.upTo)) return tier;
  }
  // Validation guarantees a last `inf` tier.
  throw new Error("unreachable: tiered price without an inf tier");
}

/**
 * Prices a non-negative quantity with Stripe semantics:
 * - per_unit: `quantity × unit`; with `transform_quantity`, `round(quantity / divide_by) × unit`
 *   where round is up or down to whole packages;
 * - graduated: each tier prices the units that fall in it, plus its flat amount if the quantity
 *   reaches it; the first tier is always reached (its flat amount is owed even at quantity 0);
 * - volume: all units at the rate of the tier the total falls in, plus that tier's flat amount.
 * The result is exact; rounding to minor units happens once per line, in the caller.
 */
export function priceQuantity(
  price: CompiledPrice,
  quantity: Decimal,
  /** `fmt(quantity)`, when the caller already has it (saves formatting it again). */
  quantityText?: string,
): PricedQuantity {
  switch (price.scheme) {
    case "per_unit": {
      if (price.transform === null) return { amount: quantity.times(price.unit) };
      const packages = divRound(quantity, price.transform.divideBy, price.transform.round);
      return { amount: packages.times(price.unit), packages };
    }
    case "graduated": {
      const tier = tierFor(price.tiers, quantity);
      const inTier = isZero(tier.from) ? quantity : quantity.minus(tier.from);
      const units = inTier.times(tier.unit);
      const partAmount = isZero(tier.flat) ? units : units.plus(tier.flat);
      const breakdown: TierBreakdown[] = [];
      for (const t of price.tiers) {
        if (t === tier) break;
        if (t.full !== null) breakdown.push(t.full);
      }
      breakdown.push({
        tier: tier.number,
        from: tier.fromStr,
        up_to: tier.upToStr,
        quantity: inTier === quantity && quantityText !== undefined ? quantityText : fmt(inTier),
        unit_amount_decimal: tier.unitStr,
        flat_amount_decimal: tier.flatStr,
        amount_decimal: fmt(partAmount),
      });
      return { amount: isZero(tier.before) ? partAmount : tier.before.plus(partAmount), tiers: breakdown };
    }
    case "volume": {
      const tier = tierFor(price.tiers, quantity);
      const units = quantity.times(tier.unit);
      const amount = isZero(tier.flat) ? units : units.plus(tier.flat);
      const row: TierBreakdown = {
        tier: tier.number,
        from: tier.fromStr,
        up_to: tier.upToStr,
        quantity: quantityText ?? fmt(quantity),
        unit_amount_decimal: tier.unitStr,
        flat_amount_decimal: tier.flatStr,
        amount_decimal: fmt(amount),
      };
      return { amount, tiers: [row] };
    }
  }
}

/** {@link PricedQuantity} in fixed point. */
export interface PricedFixed {
  /** Exact, unrounded amount in minor units. */
  readonly amount: Fixed;
  readonly tiers?: readonly TierBreakdown[];
  /** Whole packages, for prices with `transform_quantity`. */
  readonly packages?: number;
}

/**
 * {@link priceQuantity} on safe integers: the same amount, tiers and packages for the same price and
 * quantity, or `undefined` when the price has no fixed-point form or an intermediate value does not
 * fit (then the caller uses priceQuantity). Rating a line this way allocates a few small objects
 * instead of big.js digit arrays, which is most of the cost of rating at volume.
 */
export function priceFixed(
  price: CompiledPrice,
  quantity: Fixed,
  /** `fmtFixed(quantity)`. */
  quantityText: string,
): PricedFixed | undefined {
  const fast = price.fast;
  if (fast === null) return undefined;
  switch (price.scheme) {
    case "per_unit": {
      if (fast.transform === null) {
        const amount = mulFixed(quantity, fast.unit);
        return amount === undefined ? undefined : { amount };
      }
      const packages = divRoundFixed(quantity, fast.transform.divideBy, fast.transform.round);
      if (packages === undefined) return undefined;
      const amount = mulFixed({ c: packages, s: 0 }, fast.unit);
      return amount === undefined ? undefined : { amount, packages };
    }
    case "graduated": {
      const i = fastTierFor(fast.tiers, quantity);
      if (i === undefined) return undefined;
      const ft = fast.tiers[i]!;
      const tier = price.tiers[i]!;
      const inTier = ft.from.c === 0 ? quantity : subFixed(quantity, ft.from);
      if (inTier === undefined) return undefined;
      const units = mulFixed(inTier, ft.unit);
      const partAmount = units === undefined ? undefined : addFixed(units, ft.flat);
      const amount = partAmount === undefined ? undefined : addFixed(ft.before, partAmount);
      if (partAmount === undefined || amount === undefined) return undefined;
      const row: TierBreakdown = {
        tier: tier.number,
        from: tier.fromStr,
        up_to: tier.upToStr,
        quantity: inTier === quantity ? quantityText : fmtFixed(inTier),
        unit_amount_decimal: tier.unitStr,
        flat_amount_decimal: tier.flatStr,
        amount_decimal: fmtFixed(partAmount),
      };
      return { amount, tiers: withRow(ft.fullBefore, row) };
    }
    case "volume": {
      const i = fastTierFor(fast.tiers, quantity);
      if (i === undefined) return undefined;
      const ft = fast.tiers[i]!;
      const tier = price.tiers[i]!;
      const units = mulFixed(quantity, ft.unit);
      const amount = units === undefined ? undefined : addFixed(units, ft.flat);
      if (amount === undefined) return undefined;
      const row: TierBreakdown = {
        tier: tier.number,
        from: tier.fromStr,
        up_to: tier.upToStr,
        quantity: quantityText,
        unit_amount_decimal: tier.unitStr,
        flat_amount_decimal: tier.flatStr,
        amount_decimal: fmtFixed(amount),
      };
      return { amount, tiers: [row] };
    }
  }
}

/** `[...rows, row]`, allocated once at its final size (spread, concat or push are slower here). */
function withRow(rows: readonly TierBreakdown[], row: TierBreakdown): TierBreakdown[] {
  const n = rows.length;
  if (n === 0) return [row];
  const out = new Array<TierBreakdown>(n + 1);
  for (let i = 0; i < n; i++) out[i] = rows[i]!;
  out[n] = row;
  return out;
}

/** Index of the tier holding `quantity` (as {@link tierFor}), or `undefined` if a bound does not align. */
function fastTierFor(tiers: readonly FastTier[], quantity: Fixed): number | undefined {
  for (let i = 0; i < tiers.length; i++) {
    const upTo = tiers[i]!.upTo;
    if (upTo === null) return i;
    const c = cmpFixed(quantity, upTo);
    if (c === undefined) return undefined;
    if (c <= 0) return i;
  }
  // Validation guarantees a last `inf` tier.
  throw new Error("unreachable: tiered price without an inf tier");
}
