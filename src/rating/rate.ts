import { addIntervals, addMonths, toEpochMs, toIso } from "./calendar.js";
import { BillingPeriod, billingPeriod } from "./period.js";
import type { Timestamp } from "./calendar.js";
import {
  dec,
  decFromInt,
  divRound,
  fmt,
  HUNDRED,
  isInteger,
  isNegative,
  max,
  min,
  msToSeconds,
  ONE,
  roundHalfUp,
  toDecimal,
  isCanonical,
  isZero,
  toSafeInteger,
  ZERO,
} from "./decimal.js";
import type { Decimal } from "./decimal.js";
import { cmpFixed, FIXED_ZERO, fmtFixed, parseFixed, roundHalfUpFixed, subFixed } from "./fixed.js";
import type { Fixed } from "./fixed.js";
import { formatPath, joinPath, RatingInputError } from "./errors.js";
import type { RatingIssue } from "./errors.js";
import type { DecimalSource, Plan, PlanInput } from "./plan-schema.js";
import { compilePlan, priceFixed, priceQuantity } from "./pricing.js";
import type { CompiledPlan, CompiledPrice } from "./pricing.js";
import type {
  DiscountDetail,
  LineItem,
  LinePeriod,
  Proration,
  RatedInvoice,
  TierBreakdown,
} from "./types.js";

/** Usage for a plan phase: meter key → quantity (non-negative decimal string, safe integer or bigint). */
export type UsageInput = Readonly<Record<string, DecimalSource>>;

/** A plan to rate with: raw (validated on each call), validated, or compiled once with `compilePlan`. */
export type PlanLike = PlanInput | Plan | CompiledPlan;

/** A change to the subscription inside the billing period. */
export type SubscriptionChange =
  /** The seat count changes at `at`. */
  | { readonly type: "seats"; readonly at: Timestamp; readonly seats: DecimalSource }
  /**
   * The subscription moves to `plan` at `at` (same currency and billing interval). `usage` is what was
   * measured from `at` until the next plan change or the end of the period.
   */
  | { readonly type: "plan"; readonly at: Timestamp; readonly plan: PlanLike; readonly usage?: UsageInput };

/** Everything rating needs: no clock, no I/O — the same input always gives the same invoice. */
export interface RatingInput {
  /** The billing period `[start, end)`: one interval of the plan. */
  readonly period: { readonly start: Timestamp; readonly end: Timestamp } | BillingPeriod;
  /** The plan in effect at the start of the period (or at `subscriptionStart` if later). */
  readonly plan: PlanLike;
  /** Usage measured while `plan` was in effect. Meters not listed count as 0. */
  readonly usage?: UsageInput;
  /** Seat count at the start; required when a plan in effect has a `seat` price. */
  readonly seats?: DecimalSource;
  /** Seat and plan changes strictly inside the billing period, in time order. */
  readonly changes?: readonly SubscriptionChange[];
  /**
   * When the subscription started. Anchors discount durations (`once`, `repeating`), and if it falls
   * inside the period, fees are prorated from it. Required when a plan has a `once` or `repeating` discount.
   */
  readonly subscriptionStart?: Timestamp;
  /** When the subscription ended, if inside the period: fees are prorated up to it. */
  readonly subscriptionEnd?: Timestamp;
  /**
   * Where billing of this period starts when that is later than the period start and the
   * subscription start (the close's first period after a customer's time zone changed, or after a
   * subscription's `billing_starts_at`): fees are prorated from it like from a mid-period start,
   * while discount durations still count from `subscriptionStart`.
   */
  readonly billedFrom?: Timestamp;
}

interface Phase {
  readonly plan: CompiledPlan;
  readonly from: number;
  readonly to: number;
  /** Indexed by `plan.meterSlots`; a meter without usage has no entry. */
  readonly usage: readonly (Quantity | undefined)[];
}

interface SeatStep {
  readonly from: number;
  readonly seats: Decimal | null;
}

interface Prepared {
  readonly period: BillingPeriod;
  readonly anchor: number | null;
  readonly phases: Phase[];
  readonly seats: SeatStep[];
}

function parseTime(value: Timestamp | undefined, path: string, issues: RatingIssue[]): number | undefined {
  if (value === undefined) return undefined;
  const ms = toEpochMs(value);
  if (ms === undefined) {
    issues.push({
      path,
      message: "must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z",
    });
  }
  return ms;
}

function compileAt(plan: PlanLike, path: string, issues: RatingIssue[]): CompiledPlan | undefined {
  try {
    return compilePlan(plan);
  } catch (err) {
    if (!(err instanceof RatingInputError)) throw err;
    for (const i of err.issues) issues.push({ path: joinPath(path, i.path), message: i.message });
    return undefined;
  }
}

function parseSeats(value: DecimalSource, path: string, issues: RatingIssue[]): Decimal | null {
  const d = toDecimal(value);
  if (d === undefined || isNegative(d) || !isInteger(d)) {
    issues.push({ path, message: "must be a non-negative integer seat count" });
    return null;
  }
  return d;
}

/**
 * A usage quantity with its canonical text (the input string itself when already canonical).
 * A plain decimal string of at most 15 significant digits or a non-negative safe integer (nearly all
 * usage) is kept in fixed point (fixed.ts) and priced on safe integers, its Decimal made only if a
 * line needs the big.js path; anything else (bigints, longer numbers, and invalid input, which is
 * reported from there) is parsed with big.js.
 */
interface Quantity extends Fixed {
  readonly text: string;
  /** null when the quantity is the fixed-point `c / 10^s` (see {@link decimalOf}); c = s = 0 otherwise. */
  readonly value: Decimal | null;
}

function decimalOf(q: Quantity): Decimal {
  // The text of a fixed-point quantity is canonical, so big.js reads back the same value.
  return q.value ?? dec(q.text);
}

function parseUsage(
  usage: UsageInput | undefined,
  plan: CompiledPlan,
  path: string,
  issues: RatingIssue[],
): (Quantity | undefined)[] {
  if (usage === undefined) return [];
  // One slot per meter of the plan, allocated once (filling an empty array would grow it).
  const out = new Array<Quantity | undefined>(plan.meterSlots.size);
  // for-in skipping inherited keys visits the keys of Object.keys in the same order, without
  // allocating them as an array.
  for (const meter in usage) {
    if (!Object.hasOwn(usage, meter)) continue;
    const slot = plan.meterSlots.get(meter);
    if (slot === undefined) {
      issues.push({
        path: joinPath(path, formatPath([meter])),
        message: `no metered price of plan ${plan.key} uses this meter`,
      });
      continue;
    }
    const raw = usage[meter];
    if (typeof raw === "string") {
      const parsed = parseFixed(raw);
      if (parsed !== undefined) {
        // `parsed` itself is not kept nor passed on, so the optimizing compiler need not allocate it.
        const { c, s } = parsed;
        out[slot] = { c, s, text: parsed.canonical ? raw : fmtFixed({ c, s }), value: null };
        continue;
      }
    } else if (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0) {
      const c = raw + 0; // -0 → 0
      out[slot] = { c, s: 0, text: String(c), value: null };
      continue;
    }
    const value = toDecimal(raw);
    if (value === undefined || isNegative(value)) {
      issues.push({
        path: joinPath(path, formatPath([meter])),
        message: 'must be a non-negative decimal (a string like "12.5" or an integer)',
      });
      continue;
    }
    out[slot] = { c: 0, s: 0, text: typeof raw === "string" && isCanonical(raw) ? raw : fmt(value), value };
  }
  return out;
}

const NO_CHANGES: readonly SubscriptionChange[] = [];

/** Validates the input and lays out the plan phases and seat steps; throws on any issue. */
function prepare(input: RatingInput): Prepared {
  const issues: RatingIssue[] = [];
  let period: BillingPeriod | undefined;
  if (input.period instanceof BillingPeriod) {
    period = input.period;
  } else {
    try {
      period = billingPeriod(input.period.start, input.period.end);
    } catch (err) {
      if (!(err instanceof RatingInputError)) throw err;
      issues.push(...err.issues);
    }
  }
  const first = compileAt(input.plan, "plan", issues);
  const subStart = parseTime(input.subscriptionStart, "subscriptionStart", issues);
  const subEnd = parseTime(input.subscriptionEnd, "subscriptionEnd", issues);
  const billedFrom = parseTime(input.billedFrom, "billedFrom", issues);
  if (period === undefined || first === undefined) throw new RatingInputError(issues);
  const start = period.startMs;
  const end = period.endMs;
  // Flat and seat fees are per billing period, so a period of the wrong length would bill them wrongly
  // without any error. Month and year lengths vary with the anchor day (Jan 31 → Feb 28 → Mar 31), so
  // allow the few days of clamping; days and weeks are exact.
  const expectedEnd = period.stepFromStart(first.interval, first.intervalCount);
  const slack = first.interval === "month" || first.interval === "year" ? 3 * 86_400_000 : 0;
  if (Math.abs(end - expectedEnd) > slack) {
    issues.push({
      path: "period.end",
      message: `must be one billing interval (${first.intervalCount} ${first.interval}) after period.start, about ${toIso(expectedEnd)}; fees are charged per billing period`,
    });
  }
  let from = start;
  let to = end;
  if (subStart !== undefined) {
    if (subStart >= end) issues.push({ path: "subscriptionStart", message: "must be before period.end" });
    from = Math.max(start, subStart);
  }
  if (billedFrom !== undefined) {
    if (billedFrom >= end) issues.push({ path: "billedFrom", message: "must be before period.end" });
    from = Math.max(from, billedFrom);
  }
  if (subEnd !== undefined) {
    if (subEnd <= from)
      issues.push({
        path: "subscriptionEnd",
        message: "must be after the period start and the subscription start",
      });
    to = Math.min(end, subEnd);
  }

  /** Phases ended by a plan change. */
  const earlier: Phase[] = [];
  const seats: SeatStep[] = [
    { from, seats: input.seats === undefined ? null : parseSeats(input.seats, "seats", issues) },
  ];
  // The phase being laid out, as three variables rather than an object rebuilt on each plan change.
  let currentPlan = first;
  let currentFrom = from;
  let currentUsage = parseUsage(input.usage, first, "usage", issues);
  let lastAt = from;
  let lastPlanAt = Number.NaN;
  let lastSeatAt = Number.NaN;
  // A plain loop rather than forEach, whose closure would cost every call a context object even
  // without changes; holes are skipped as forEach skips them.
  const changes = input.changes ?? NO_CHANGES;
  for (let i = 0; i < changes.length; i++) {
    if (!(i in changes)) continue;
    const change = changes[i]!;
    const path = `changes[${i}]`;
    const at = parseTime(change.at, `${path}.at`, issues);
    if (at === undefined) continue;
    if (at <= from || at >= to) {
      issues.push({
        path: `${path}.at`,
        message: `must be strictly inside the billed time ${toIso(from)} – ${toIso(to)}`,
      });
      continue;
    }
    if (at < lastAt) {
      issues.push({ path: `${path}.at`, message: "changes must be in time order" });
      continue;
    }
    lastAt = at;
    switch (change.type) {
      case "seats":
        if (at === lastSeatAt)
          issues.push({ path: `${path}.at`, message: "two seat changes at the same time" });
        lastSeatAt = at;
        seats.push({ from: at, seats: parseSeats(change.seats, `${path}.seats`, issues) });
        break;
      case "plan": {
        if (at === lastPlanAt)
          issues.push({ path: `${path}.at`, message: "two plan changes at the same time" });
        lastPlanAt = at;
        const plan = compileAt(change.plan, `${path}.plan`, issues);
        if (plan === undefined) continue;
        if (plan.currency.code !== first.currency.code) {
          issues.push({
            path: `${path}.plan.currency`,
            message: `must be ${first.currency.code} like the plan it replaces (one invoice, one currency)`,
          });
        }
        if (plan.interval !== first.interval || plan.intervalCount !== first.intervalCount) {
          issues.push({
            path: `${path}.plan.interval`,
            message: `must be ${first.intervalCount} ${first.interval} like the plan it replaces; a new billing interval starts a new billing period`,
          });
        }
        earlier.push({ plan: currentPlan, from: currentFrom, to: at, usage: currentUsage });
        currentPlan = plan;
        currentFrom = at;
        currentUsage = parseUsage(change.usage, plan, `${path}.usage`, issues);
        break;
      }
      default: {
        const unknown: never = change;
        issues.push({
          path: `${path}.type`,
          message: `must be seats or plan, got ${JSON.stringify((unknown as { type: unknown }).type)}`,
        });
      }
    }
  }
  const last: Phase = { plan: currentPlan, from: currentFrom, to, usage: currentUsage };
  // Usually there is no plan change: a one-element literal, where push would allocate room for 17.
  const phases = earlier.length === 0 ? [last] : [...earlier, last];

  const anchor = subStart ?? null;
  for (let p = 0; p < phases.length; p++) {
    const phase = phases[p]!;
    const planPath = p === 0 ? "plan" : "changes";
    for (const price of phase.plan.prices) {
      if (price.type !== "seat") continue;
      let missing = false;
      for (let i = 0; i < seats.length && !missing; i++) {
        const s = seats[i]!;
        missing = s.seats === null && s.from < phase.to && (seats[i + 1]?.from ?? to) > phase.from;
      }
      if (missing && input.seats === undefined) {
        issues.push({
          path: "seats",
          message: `is required: plan ${phase.plan.key} has the seat price ${price.key}`,
        });
      }
    }
    if (anchor === null) {
      for (const d of phase.plan.discounts) {
        if (d.duration !== "forever") {
          issues.push({
            path: "subscriptionStart",
            message: `is required: ${planPath === "plan" ? "" : "a changed-to "}plan ${phase.plan.key} has the ${d.duration} discount ${d.key}, whose duration counts from it`,
          });
        }
      }
    }
  }
  if (issues.length > 0) throw new RatingInputError(dedupe(issues));
  return { period, anchor, phases, seats };
}

function dedupe(issues: RatingIssue[]): RatingIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\u0000${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** Whether a discount applies to the invoice of `[start, end)` given the subscription start. */
function discountActive(
  d: CompiledPlan["discounts"][number],
  plan: CompiledPlan,
  start: number,
  end: number,
  anchor: number | null,
): boolean {
  switch (d.duration) {
    case "forever":
      return anchor === null || anchor < end;
    case "once":
      // The first invoice only: the one whose period holds the subscription start.
      return anchor !== null && start <= anchor && anchor < end;
    case "repeating": {
      if (anchor === null) return false;
      const until =
        d.durationInMonths !== null
          ? addMonths(anchor, d.durationInMonths)
          : addIntervals(anchor, plan.interval, (d.durationInPeriods ?? 0) * plan.intervalCount);
      // Every invoice whose period starts before the discount ends (and after the subscription began).
      return start < until && end > anchor;
    }
  }
}

type MutableLine = { -readonly [K in keyof LineItem]: LineItem[K] };

/**
 * The lines being assembled. Every line amount is a safe integer (`push` throws otherwise), so sums
 * are done on numbers while each partial sum stays a safe integer (then exact), else with big.js.
 */
class Lines {
  readonly items: LineItem[] = [];

  get length(): number {
    return this.items.length;
  }

  /** Appends a line whose `amount` is set from `exact` (an integer decimal). */
  push(line: Omit<MutableLine, "amount"> & { amount?: number }, exact: Decimal): LineItem {
    return this.pushSafe(line, toSafeInteger(exact, "line amount"));
  }

  /** Appends a line with its amount, a safe integer computed exactly. */
  pushSafe(line: Omit<MutableLine, "amount"> & { amount?: number }, amount: number): LineItem {
    line.amount = amount;
    const item = line as LineItem;
    this.items.push(item);
    return item;
  }

  /** Exact sum of the amounts of lines `[from, length)` as a safe integer, or `undefined` if it does not fit. */
  safeSumFrom(from: number): number | undefined {
    let sum = 0;
    for (let i = from; i < this.items.length; i++) {
      sum += this.items[i]!.amount;
      if (!Number.isSafeInteger(sum)) return undefined;
    }
    return sum;
  }

  /** Exact sum of the amounts of lines `[from, length)`. */
  sumFrom(from: number): Decimal {
    const safe = this.safeSumFrom(from);
    if (safe !== undefined) return decFromInt(safe);
    let sum = ZERO;
    for (let i = from; i < this.items.length; i++) sum = sum.plus(decFromInt(this.items[i]!.amount));
    return sum;
  }
}

/**
 * Rates one billing period of one subscription: usage and a plan in, invoice line items out.
 * Pure: no I/O, no clock, no global state — the close job, the live invoice preview and the CLI
 * all call this with the same inputs and get the same lines.
 *
 * Rounding: every line is computed exactly (decimal unit amounts, tier sums, proration fractions,
 * percentages) and rounded once, half away from zero, to an integer number of minor units.
 * Subtotal and total are sums of those integers.
 *
 * @throws RatingInputError naming each bad field (plan, usage, period, seats, changes).
 * @throws RangeError if an amount exceeds 2^53 − 1 minor units (it could not be emitted exactly).
 * @example
 * ```ts
 * const invoice = rate({
 *   plan: compilePlan(plan),
 *   period: { start: "2026-11-01T00:00:00Z", end: "2026-12-01T00:00:00Z" },
 *   usage: { api_calls: "1250000" },
 *   seats: 5,
 * });
 * invoice.total; // integer minor units, e.g. 16250 = $162.50
 * ```
 */
export function rate(input: RatingInput): RatedInvoice {
  const { period, anchor, phases, seats } = prepare(input);
  const start = period.startMs;
  const end = period.endMs;
  const periodMs = end - start;
  const fullPeriod = period.line;
  const ctx: RateContext = { start, end, anchor, periodMs, fullPeriod };

  const lines = new Lines();
  let planDiscounts = ZERO;
  for (const phase of phases) {
    if (phase.to <= phase.from) continue;
    const off = ratePhase(ctx, phase, seats, lines);
    if (!isZero(off)) planDiscounts = planDiscounts.plus(off);
  }
  let subtotal: number;
  let total: number;
  const safeTotal = lines.safeSumFrom(0);
  if (safeTotal !== undefined && isZero(planDiscounts)) {
    subtotal = safeTotal;
    total = safeTotal;
  } else {
    const exact = lines.sumFrom(0);
    subtotal = toSafeInteger(exact.minus(planDiscounts), "subtotal");
    total = toSafeInteger(exact, "total");
  }
  const { currency } = phases[0]!.plan;
  return {
    currency: currency.code,
    currency_exponent: currency.exponent,
    period: fullPeriod,
    lines: lines.items,
    subtotal,
    total,
  };
}

interface RateContext {
  readonly start: number;
  readonly end: number;
  readonly anchor: number | null;
  readonly periodMs: number;
  readonly fullPeriod: LinePeriod;
}

function rangeOf(ctx: RateContext, from: number, to: number): LinePeriod {
  return from === ctx.start && to === ctx.end ? ctx.fullPeriod : { start: toIso(from), end: toIso(to) };
}

function prorationOf(ctx: RateContext, ms: number): Proration | undefined {
  return ms === ctx.periodMs
    ? undefined
    : { seconds: msToSeconds(ms), period_seconds: msToSeconds(ctx.periodMs) };
}

/** `exact × ms / period`, rounded once, half up (no division at all for a full period). */
function prorate(ctx: RateContext, exact: Decimal, ms: number): Decimal {
  return ms === ctx.periodMs
    ? roundHalfUp(exact)
    : divRound(exact.times(decFromInt(ms)), decFromInt(ctx.periodMs), "half_up");
}

/**
 * Rates one plan phase: its price lines (each followed by its price-scoped discounts), then the
 * spend cap, the minimum commitment, and the plan-scoped discounts. Returns the plan-scoped
 * discount total (negative or zero), which Stripe-style subtotals exclude.
 */
function ratePhase(ctx: RateContext, phase: Phase, seats: readonly SeatStep[], lines: Lines): Decimal {
  const { plan } = phase;
  const phaseMs = phase.to - phase.from;
  const phaseRange = rangeOf(ctx, phase.from, phase.to);
  const phaseStart = lines.length;
  const hasPriceDiscounts = plan.hasPriceDiscounts;
  let usageAmount = ZERO;

  for (let p = 0; p < plan.prices.length; p++) {
    const price = plan.prices[p]!;
    const priceStart = lines.length;
    switch (price.type) {
      case "flat": {
        const proration = prorationOf(ctx, phaseMs);
        lines.push(
          feeLine(price, plan, "1", phaseRange, proration),
          prorate(ctx, priceQuantity(price, ONE).amount, phaseMs),
        );
        break;
      }
      case "seat":
        for (const seg of seatSegments(seats, phase.from, phase.to)) {
          const priced = priceQuantity(price, seg.seats);
          const ms = seg.to - seg.from;
          const line = feeLine(
            price,
            plan,
            fmt(seg.seats),
            rangeOf(ctx, seg.from, seg.to),
            prorationOf(ctx, ms),
          );
          if (priced.tiers !== undefined) line.tiers = priced.tiers;
          lines.push(line, prorate(ctx, priced.amount, ms));
        }
        break;
      case "metered":
        usageLine(price, plan, phase.usage[plan.priceSlots[p]!], phaseRange, lines);
        break;
    }
    // Price-scoped discounts sit right under the lines they reduce.
    if (hasPriceDiscounts) {
      for (const d of plan.discounts) {
        if (d.price !== price.key || !discountActive(d, plan, ctx.start, ctx.end, ctx.anchor)) continue;
        discountLine(ctx, d, plan, lines.sumFrom(priceStart), phaseRange, phaseMs, "price", lines);
      }
    }
    if (price.type === "metered" && plan.spendCap !== null)
      usageAmount = usageAmount.plus(lines.sumFrom(priceStart));
  }

  if (plan.spendCap !== null) {
    const cap = prorate(ctx, plan.spendCap, phaseMs);
    if (usageAmount.gt(cap)) {
      const line: MutableLine = {
        ...otherLine("spend_cap", plan, plan.spendCapDescription, phaseRange, prorationOf(ctx, phaseMs)),
        spend_cap: {
          amount: toSafeInteger(cap, "spend cap"),
          usage_amount: toSafeInteger(usageAmount, "usage amount"),
        },
      };
      lines.push(line, cap.minus(usageAmount));
    }
  }

  let planDiscounts = ZERO;
  if (plan.commitment === null && !plan.hasPlanDiscounts) return planDiscounts;

  let running = lines.sumFrom(phaseStart);
  if (plan.commitment !== null) {
    const commitment = prorate(ctx, plan.commitment, phaseMs);
    if (running.lt(commitment)) {
      const line: MutableLine = {
        ...otherLine(
          "minimum_commitment",
          plan,
          plan.commitmentDescription,
          phaseRange,
          prorationOf(ctx, phaseMs),
        ),
        commitment: {
          amount: toSafeInteger(commitment, "commitment"),
          spend: toSafeInteger(running, "spend"),
        },
      };
      lines.push(line, commitment.minus(running));
      running = commitment;
    }
  }

  // Plan-scoped discounts, in the order the plan lists them, each on what is left to pay.
  for (const d of plan.discounts) {
    if (d.price !== null || !discountActive(d, plan, ctx.start, ctx.end, ctx.anchor)) continue;
    const off = discountLine(ctx, d, plan, running, phaseRange, phaseMs, "plan", lines);
    running = running.plus(off);
    planDiscounts = planDiscounts.plus(off);
  }
  return planDiscounts;
}

/** Fields shared by commitment and cap lines (amount is set by Lines.push). */
function otherLine(
  kind: "spend_cap" | "minimum_commitment",
  plan: CompiledPlan,
  description: string,
  period: LinePeriod,
  proration: Proration | undefined,
): MutableLine {
  const line: MutableLine = {
    kind,
    plan: plan.key,
    price: null,
    meter: null,
    description,
    period,
    quantity: "1",
    unit_amount_decimal: null,
    amount: 0,
  };
  if (proration !== undefined) line.proration = proration;
  return line;
}

function feeLine(
  price: CompiledPrice,
  plan: CompiledPlan,
  quantity: string,
  period: LinePeriod,
  proration: Proration | undefined,
): MutableLine {
  const line: MutableLine = {
    kind: price.type === "seat" ? "seat" : "flat",
    plan: plan.key,
    price: price.key,
    meter: null,
    description: proration === undefined ? price.description : `${price.description} (prorated)`,
    period,
    quantity,
    unit_amount_decimal: price.unitStr,
    amount: 0,
  };
  if (proration !== undefined) line.proration = proration;
  return line;
}

const NO_USAGE: Quantity = { c: 0, s: 0, text: "0", value: null };

function usageLine(
  price: CompiledPrice,
  plan: CompiledPlan,
  usage: Quantity | undefined,
  period: LinePeriod,
  lines: Lines,
): void {
  const quantity = usage ?? NO_USAGE;
  if (quantity.value === null && usageLineFixed(price, plan, quantity, quantity.text, period, lines)) {
    return;
  }
  let billable = decimalOf(quantity);
  let billableText = quantity.text;
  if (price.included !== null) {
    if (billable.lte(price.included)) {
      billable = ZERO;
      billableText = "0";
    } else {
      billable = billable.minus(price.included);
      billableText = fmt(billable);
    }
  }
  const priced = priceQuantity(price, billable, billableText);
  const line = usageLineItem(
    price,
    plan,
    period,
    quantity.text,
    billableText,
    priced.packages === undefined ? undefined : fmt(priced.packages),
    priced.tiers,
  );
  lines.push(line, roundHalfUp(priced.amount));
}

/**
 * {@link usageLine} in fixed point (fixed.ts): pushes the same line and returns true, or pushes
 * nothing and returns false when the price or an intermediate value does not fit in a safe integer.
 */
function usageLineFixed(
  price: CompiledPrice,
  plan: CompiledPlan,
  quantity: Fixed,
  quantityText: string,
  period: LinePeriod,
  lines: Lines,
): boolean {
  if (price.fast === null) return false;
  let billable: Fixed | undefined = quantity;
  let billableText = quantityText;
  const included = price.fast.included;
  if (included !== null) {
    const c = cmpFixed(quantity, included);
    if (c === undefined) return false;
    if (c <= 0) {
      billable = FIXED_ZERO;
      billableText = "0";
    } else {
      billable = subFixed(quantity, included);
      if (billable === undefined) return false;
      billableText = fmtFixed(billable);
    }
  }
  const priced = priceFixed(price, billable, billableText);
  const amount = priced === undefined ? undefined : roundHalfUpFixed(priced.amount);
  if (priced === undefined || amount === undefined) return false;
  const line = usageLineItem(
    price,
    plan,
    period,
    quantityText,
    billableText,
    priced.packages === undefined ? undefined : String(priced.packages),
    priced.tiers,
  );
  lines.pushSafe(line, amount);
  return true;
}

/** A usage line without its amount; both pricing paths build it here, so their lines look alike. */
function usageLineItem(
  price: CompiledPrice,
  plan: CompiledPlan,
  period: LinePeriod,
  quantityText: string,
  billableText: string,
  packagesText: string | undefined,
  tiers: readonly TierBreakdown[] | undefined,
): MutableLine {
  const line: MutableLine = {
    kind: "usage",
    plan: plan.key,
    price: price.key,
    meter: price.meter,
    description: price.description,
    period,
    quantity: quantityText,
    unit_amount_decimal: price.unitStr,
    amount: 0,
  };
  if (price.includedStr !== null) {
    line.included_quantity = price.includedStr;
    line.billable_quantity = billableText;
  }
  if (packagesText !== undefined) line.packages = packagesText;
  if (tiers !== undefined) line.tiers = tiers;
  return line;
}

/** Appends a discount line computed on `base`; returns its (negative or zero) amount. */
function discountLine(
  ctx: RateContext,
  d: CompiledPlan["discounts"][number],
  plan: CompiledPlan,
  base: Decimal,
  period: LinePeriod,
  phaseMs: number,
  scope: DiscountDetail["scope"],
  lines: Lines,
): Decimal {
  const positiveBase = max(ZERO, base);
  let off: Decimal;
  let proration: Proration | undefined;
  if (d.percentOff !== null) {
    off = divRound(positiveBase.times(d.percentOff), HUNDRED, "half_up");
  } else {
    // A fixed amount is per full period: a partial phase gets its time share, rounded once.
    off = min(prorate(ctx, d.amountOff ?? ZERO, phaseMs), positiveBase);
    proration = prorationOf(ctx, phaseMs);
  }
  const discount: DiscountDetail = {
    key: d.key,
    ...(d.percentOffStr === null ? {} : { percent_off: d.percentOffStr }),
    ...(d.amountOffNum === null ? {} : { amount_off: d.amountOffNum }),
    base_amount: toSafeInteger(positiveBase, "discount base"),
    scope,
  };
  const line: MutableLine = {
    kind: "discount",
    plan: plan.key,
    price: d.price,
    meter: null,
    description: d.description,
    period,
    quantity: "1",
    unit_amount_decimal: null,
    amount: 0,
    discount,
  };
  if (proration !== undefined) line.proration = proration;
  const amount = off.eq(ZERO) ? ZERO : off.neg();
  lines.push(line, amount);
  return amount;
}

interface SeatSegment {
  readonly from: number;
  readonly to: number;
  readonly seats: Decimal;
}

/** The seat counts over `[from, to)`, adjacent equal counts merged. */
function seatSegments(steps: readonly SeatStep[], from: number, to: number): SeatSegment[] {
  const out: SeatSegment[] = [];
  steps.forEach((step, i) => {
    const segFrom = Math.max(step.from, from);
    const segTo = Math.min(steps[i + 1]?.from ?? to, to);
    if (segTo <= segFrom || step.seats === null) return;
    const last = out[out.length - 1];
    if (last !== undefined && last.to === segFrom && last.seats.eq(step.seats)) {
      out[out.length - 1] = { from: last.from, to: segTo, seats: last.seats };
    } else {
      out.push({ from: segFrom, to: segTo, seats: step.seats });
    }
  });
  return out;
}
