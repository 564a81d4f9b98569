import { z } from "zod";
import { currencyOf } from "./currency.js";
import { dec, fmt, fractionDigits, isInteger, isNegative, toDecimal, ZERO } from "./decimal.js";

/*
 * The plan catalog format (YAML or JSON), validated with zod.
 *
 * Prices follow Stripe's Price object field names and semantics (`billing_scheme`, `tiers_mode`,
 * `tiers[].up_to`, `unit_amount[_decimal]`, `flat_amount[_decimal]`, `transform_quantity`), so a
 * price can be moved from Stripe without translation. Tally's additions (`type`, `meter`,
 * `included_quantity`, plan-level `minimum_commitment`, `spend_cap`, `discounts`) use the same style.
 *
 * Every numeric field accepts a decimal string or a safe integer and comes out as a canonical decimal
 * string; binary floats are rejected (the YAML/JSON loader in parse.ts hands numbers over as their
 * source text, so `unit_amount_decimal: 0.05` in a file is exact).
 */

/** A decimal field as written: a decimal string, or a safe integer / bigint. */
export type DecimalSource = string | number | bigint;

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** Identifier of a plan, price, discount or meter. */
export const keySchema = z
  .string({ error: "must be a string" })
  .regex(KEY_RE, "must be 1–128 letters, digits or _ . : - and start with a letter or digit");

interface DecimalRule {
  integer?: boolean;
  sign: "positive" | "nonnegative";
  maxFractionDigits?: number;
  /** Inclusive upper bound, as a decimal string. */
  max?: string;
  /** Added to the message when an integer field gets a fraction. */
  fractionHint?: string;
}

function describeRule(rule: DecimalRule): string {
  const sign = rule.sign === "positive" ? "a positive" : "a non-negative";
  if (rule.integer) return `${sign} integer`;
  const digits =
    rule.maxFractionDigits === undefined ? "" : ` with at most ${rule.maxFractionDigits} decimal places`;
  return `${sign} decimal${digits} (a string like "0.05" or an integer)`;
}

function show(v: unknown): string {
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return String(v);
}

function isDecimalSource(v: unknown): v is DecimalSource {
  return typeof v === "string" || typeof v === "number" || typeof v === "bigint";
}

/** A numeric field: validated exactly and normalized to a canonical decimal string. */
export function decimalField(rule: DecimalRule) {
  const expected = `must be ${describeRule(rule)}`;
  return z.custom<DecimalSource>(isDecimalSource, { error: expected }).transform((v, ctx): string => {
    const d = toDecimal(v);
    if (d === undefined) {
      const why =
        typeof v === "number" && Number.isFinite(v) && !Number.isInteger(v)
          ? " (fractional values must be written as strings to stay exact)"
          : "";
      ctx.addIssue({ code: "custom", message: `${expected}, got ${show(v)}${why}` });
      return z.NEVER;
    }
    const bad =
      (rule.sign === "positive" ? d.lte(ZERO) : d.lt(ZERO)) ||
      (rule.integer === true && !d.eq(d.round(0, 0))) ||
      (rule.maxFractionDigits !== undefined && fractionDigits(fmt(d)) > rule.maxFractionDigits);
    if (bad) {
      const hint =
        rule.fractionHint !== undefined && rule.integer === true && !isInteger(d) && !isNegative(d)
          ? ` (${rule.fractionHint})`
          : "";
      ctx.addIssue({ code: "custom", message: `${expected}, got ${show(v)}${hint}` });
      return z.NEVER;
    }
    if (rule.max !== undefined && d.gt(dec(rule.max))) {
      ctx.addIssue({ code: "custom", message: `must be at most ${rule.max}, got ${show(v)}` });
      return z.NEVER;
    }
    return fmt(d);
  });
}

/** Largest integer amount we accept in a plan: it must stay a safe integer in JSON output. */
const MAX_MINOR = String(Number.MAX_SAFE_INTEGER);

/** An amount in integer minor units (cents for USD), as Stripe's `unit_amount`. */
const minorAmount = decimalField({
  integer: true,
  sign: "nonnegative",
  max: MAX_MINOR,
  fractionHint: "for fractions of a minor unit use the _decimal field, e.g. unit_amount_decimal",
});
const positiveMinorAmount = decimalField({ integer: true, sign: "positive", max: MAX_MINOR });
/** A fractional amount in minor units, as Stripe's `unit_amount_decimal` (at most 12 decimal places). */
const minorAmountDecimal = decimalField({ sign: "nonnegative", maxFractionDigits: 12 });
const positiveInt = (max?: string) =>
  decimalField({ integer: true, sign: "positive", max: max ?? MAX_MINOR });

export const currencySchema = z
  .string({ error: "must be an ISO 4217 currency code such as usd or EUR" })
  .transform((code, ctx): string => {
    const c = currencyOf(code);
    if (c === undefined) {
      ctx.addIssue({ code: "custom", message: `unknown ISO 4217 currency code ${show(code)}` });
      return z.NEVER;
    }
    return c.code;
  });

export const intervalSchema = z.enum(["day", "week", "month", "year"], {
  error: "must be one of day, week, month, year",
});

/** Stripe's `up_to`: a positive quantity, or `inf` (Stripe API responses write `null`) for the last tier. */
const upToSchema = z.union([z.literal("inf"), z.null(), decimalField({ sign: "positive" })], {
  error: 'must be a positive number or "inf"',
});

/** One tier of a tiered price (Stripe `tiers[]`). */
export const tierSchema = z
  .strictObject({
    up_to: upToSchema,
    unit_amount: minorAmount.optional(),
    unit_amount_decimal: minorAmountDecimal.optional(),
    flat_amount: minorAmount.optional(),
    flat_amount_decimal: minorAmountDecimal.optional(),
  })
  .superRefine((tier, ctx) => {
    if (tier.unit_amount !== undefined && tier.unit_amount_decimal !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["unit_amount_decimal"],
        message: "set only one of unit_amount and unit_amount_decimal",
      });
    }
    if (tier.flat_amount !== undefined && tier.flat_amount_decimal !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["flat_amount_decimal"],
        message: "set only one of flat_amount and flat_amount_decimal",
      });
    }
    if (
      tier.unit_amount === undefined &&
      tier.unit_amount_decimal === undefined &&
      tier.flat_amount === undefined &&
      tier.flat_amount_decimal === undefined
    ) {
      ctx.addIssue({
        code: "custom",
        message: "a tier needs unit_amount, unit_amount_decimal, flat_amount or flat_amount_decimal",
      });
    }
  });

/** Stripe's `transform_quantity`: bill per package of `divide_by` units, rounding packages up or down. */
export const transformQuantitySchema = z.strictObject({
  divide_by: positiveInt(),
  round: z.enum(["up", "down"], { error: "must be up or down" }),
});

/**
 * Stripe's `recurring` block. Accepted so a Stripe price can be pasted as is; it must agree with the
 * plan (`interval`, `interval_count`) and with the price `type` (`usage_type`). Other Stripe fields in
 * it (`aggregate_usage`, `meter`, `trial_period_days`) are ignored.
 */
const recurringSchema = z.looseObject({
  interval: intervalSchema,
  interval_count: positiveInt("1000").optional(),
  usage_type: z.enum(["metered", "licensed"], { error: "must be metered or licensed" }).optional(),
});

/** One price of a plan. */
export const priceSchema = z
  .strictObject({
    key: keySchema,
    /** `metered`: quantity from a meter; `flat`: quantity 1 per period; `seat`: quantity = seats. */
    type: z.enum(["metered", "flat", "seat"], { error: "must be metered, flat or seat" }),
    nickname: z.string({ error: "must be a string" }).optional(),
    meter: keySchema.optional(),
    currency: currencySchema.optional(),
    billing_scheme: z
      .enum(["per_unit", "tiered"], { error: "must be per_unit or tiered" })
      .default("per_unit"),
    unit_amount: minorAmount.optional(),
    unit_amount_decimal: minorAmountDecimal.optional(),
    tiers_mode: z.enum(["graduated", "volume"], { error: "must be graduated or volume" }).optional(),
    tiers: z.array(tierSchema, { error: "must be a list of tiers" }).optional(),
    transform_quantity: transformQuantitySchema.optional(),
    included_quantity: decimalField({ sign: "nonnegative" }).optional(),
    recurring: recurringSchema.optional(),
    lookup_key: z.string({ error: "must be a string" }).optional(),
    metadata: z.record(z.string(), z.unknown(), { error: "must be a map" }).optional(),
  })
  .superRefine((p, ctx) => {
    const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: "custom", path, message });
    if (p.type === "metered" && p.meter === undefined) issue(["meter"], "is required for a metered price");
    if (p.type !== "metered" && p.meter !== undefined) issue(["meter"], `only metered prices have a meter`);
    if (p.type !== "metered" && p.included_quantity !== undefined) {
      issue(["included_quantity"], "only metered prices have an included quantity");
    }
    if (
      p.recurring?.usage_type !== undefined &&
      (p.recurring.usage_type === "metered") !== (p.type === "metered")
    ) {
      issue(["recurring", "usage_type"], `${p.recurring.usage_type} does not match type ${p.type}`);
    }
    if (p.type === "flat" && p.billing_scheme !== "per_unit") {
      issue(["billing_scheme"], "a flat price is billed per_unit (quantity 1)");
    }
    if (p.type === "flat" && p.transform_quantity !== undefined) {
      issue(["transform_quantity"], "a flat price has quantity 1 and cannot be packaged");
    }
    if (p.billing_scheme === "per_unit") {
      if (p.unit_amount === undefined && p.unit_amount_decimal === undefined) {
        issue(["unit_amount"], "is required (or unit_amount_decimal) when billing_scheme is per_unit");
      }
      if (p.unit_amount !== undefined && p.unit_amount_decimal !== undefined) {
        issue(["unit_amount_decimal"], "set only one of unit_amount and unit_amount_decimal");
      }
      if (p.tiers !== undefined) issue(["tiers"], "is only allowed when billing_scheme is tiered");
      if (p.tiers_mode !== undefined) issue(["tiers_mode"], "is only allowed when billing_scheme is tiered");
      return;
    }
    // billing_scheme: tiered
    if (p.unit_amount !== undefined)
      issue(["unit_amount"], "is not allowed on a tiered price; set it per tier");
    if (p.unit_amount_decimal !== undefined) {
      issue(["unit_amount_decimal"], "is not allowed on a tiered price; set it per tier");
    }
    if (p.transform_quantity !== undefined) {
      issue(["transform_quantity"], "cannot be combined with tiers (as in Stripe)");
    }
    if (p.tiers_mode === undefined) issue(["tiers_mode"], "is required when billing_scheme is tiered");
    if (p.tiers === undefined || p.tiers.length === 0) {
      issue(["tiers"], "needs at least one tier when billing_scheme is tiered");
      return;
    }
    let previous: string | undefined;
    p.tiers.forEach((tier, i) => {
      const last = i === p.tiers!.length - 1;
      const inf = tier.up_to === "inf" || tier.up_to === null;
      if (inf && !last) {
        issue(["tiers", i, "up_to"], "only the last tier can be inf");
      } else if (!inf && last) {
        issue(
          ["tiers", i, "up_to"],
          "the last tier must have up_to: inf (or null) so every quantity is priced",
        );
      }
      if (!inf && tier.up_to !== null) {
        if (previous !== undefined && dec(tier.up_to).lte(dec(previous))) {
          issue(["tiers", i, "up_to"], `must be greater than the previous tier's up_to (${previous})`);
        }
        previous = tier.up_to;
      }
    });
  });

/** A discount of a plan (Stripe coupon semantics, scoped to the plan or to one of its prices). */
export const discountSchema = z
  .strictObject({
    key: keySchema,
    name: z.string({ error: "must be a string" }).optional(),
    /** Percentage off, 0 < p ≤ 100, e.g. `"20"` or `"12.5"`. */
    percent_off: decimalField({ sign: "positive", max: "100", maxFractionDigits: 12 }).optional(),
    /** Fixed amount off per period, in minor units of the plan currency. */
    amount_off: positiveMinorAmount.optional(),
    currency: currencySchema.optional(),
    duration: z.enum(["once", "repeating", "forever"], { error: "must be once, repeating or forever" }),
    /** With `repeating`: calendar months from the subscription start (Stripe's field). */
    duration_in_months: positiveInt("1200").optional(),
    /** With `repeating`: billing periods of the plan from the subscription start. */
    duration_in_periods: positiveInt("10000").optional(),
    /** Omit to discount the whole plan; set `price` to discount one price. */
    applies_to: z.strictObject({ price: keySchema }).optional(),
  })
  .superRefine((d, ctx) => {
    const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: "custom", path, message });
    if ((d.percent_off === undefined) === (d.amount_off === undefined)) {
      issue(["percent_off"], "set exactly one of percent_off and amount_off");
    }
    if (d.currency !== undefined && d.amount_off === undefined) {
      issue(["currency"], "only an amount_off discount has a currency");
    }
    const months = d.duration_in_months !== undefined;
    const periods = d.duration_in_periods !== undefined;
    if (d.duration === "repeating" && months === periods) {
      issue(
        ["duration_in_periods"],
        "a repeating discount needs exactly one of duration_in_months and duration_in_periods",
      );
    }
    if (d.duration !== "repeating" && (months || periods)) {
      issue(
        [months ? "duration_in_months" : "duration_in_periods"],
        "is only allowed with duration: repeating",
      );
    }
  });

/** Minimum spend per period; a true-up line makes up any shortfall. */
const commitmentSchema = z.strictObject({
  amount: positiveMinorAmount,
  description: z.string({ error: "must be a string" }).optional(),
});

/** Most the usage (metered) charges of a period can add up to. */
const spendCapSchema = z.strictObject({
  amount: minorAmount,
  description: z.string({ error: "must be a string" }).optional(),
});

/** A plan: a currency, a billing interval, prices, and optional commitment, cap and discounts. */
export const planSchema = z
  .strictObject({
    key: keySchema,
    name: z.string({ error: "must be a string" }).optional(),
    currency: currencySchema,
    interval: intervalSchema.default("month"),
    interval_count: positiveInt("1000").default("1"),
    /**
     * How long after a period ends the close waits for late events before it bills the period
     * (`30m`, `1h`, `2d`); the default is TALLY_CLOSE_GRACE. Rating itself ignores it.
     */
    grace_period: z
      .string({ error: "must be a duration such as 30m, 1h or 2d" })
      .regex(/^\d{1,6}(s|m|h|d)$/, "must be a duration such as 30m, 1h or 2d")
      .optional(),
    prices: z.array(priceSchema, { error: "must be a list of prices" }).min(1, "needs at least one price"),
    minimum_commitment: commitmentSchema.optional(),
    spend_cap: spendCapSchema.optional(),
    discounts: z.array(discountSchema, { error: "must be a list of discounts" }).default([]),
    metadata: z.record(z.string(), z.unknown(), { error: "must be a map" }).optional(),
  })
  .superRefine((plan, ctx) => {
    const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: "custom", path, message });
    const priceKeys = new Map<string, number>();
    plan.prices.forEach((price, i) => {
      const first = priceKeys.get(price.key);
      if (first !== undefined) issue(["prices", i, "key"], `duplicate price key (also prices[${first}])`);
      else priceKeys.set(price.key, i);
      if (price.currency !== undefined && price.currency !== plan.currency) {
        issue(["prices", i, "currency"], `must match the plan currency ${plan.currency}`);
      }
      const rec = price.recurring;
      if (rec !== undefined) {
        if (rec.interval !== plan.interval) {
          issue(["prices", i, "recurring", "interval"], `must match the plan interval ${plan.interval}`);
        }
        if ((rec.interval_count ?? "1") !== plan.interval_count) {
          issue(
            ["prices", i, "recurring", "interval_count"],
            `must match the plan interval_count ${plan.interval_count}`,
          );
        }
      }
    });
    const discountKeys = new Map<string, number>();
    plan.discounts.forEach((d, i) => {
      const first = discountKeys.get(d.key);
      if (first !== undefined)
        issue(["discounts", i, "key"], `duplicate discount key (also discounts[${first}])`);
      else discountKeys.set(d.key, i);
      if (d.applies_to !== undefined && !priceKeys.has(d.applies_to.price)) {
        issue(
          ["discounts", i, "applies_to", "price"],
          `no price with key ${show(d.applies_to.price)} in this plan`,
        );
      }
      if (d.currency !== undefined && d.currency !== plan.currency) {
        issue(["discounts", i, "currency"], `must match the plan currency ${plan.currency}`);
      }
    });
  });

/**
 * Reports every repeated `key` in the list at `doc[section]` as `duplicate <noun> key (also
 * <section>[i])` on the later entry: the rule every catalog section (plans, meters) follows.
 */
export function duplicateKeyIssues(section: string, noun: string) {
  return (doc: Record<string, unknown>, ctx: z.RefinementCtx): void => {
    const seen = new Map<string, number>();
    (doc[section] as readonly { key: string }[]).forEach((item, i) => {
      const first = seen.get(item.key);
      if (first !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: [section, i, "key"],
          message: `duplicate ${noun} key (also ${section}[${first}])`,
        });
      } else seen.set(item.key, i);
    });
  };
}

/**
 * A catalog document: `plans:` plus any other top-level sections (`meters:` and the like belong to
 * other parts of Tally and are ignored here).
 */
export const catalogSchema = z
  .looseObject({
    plans: z.array(planSchema, { error: "must be a list of plans" }).min(1, "needs at least one plan"),
  })
  .superRefine(duplicateKeyIssues("plans", "plan"));

/** A usage map: meter key → quantity for the period (non-negative decimal). */
export const usageSchema = z.record(keySchema, decimalField({ sign: "nonnegative" }), {
  error: "must be an object mapping meter keys to quantities",
});

export const timestampSchema = z.iso.datetime({
  offset: true,
  error: "must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-01T00:00:00Z",
});

/**
 * The CLI's subscription file: when the subscription started (anchor of discount durations),
 * the seat count, and changes within the period (seat changes; plan changes by plan key, each with
 * the usage measured while the new plan was in effect).
 */
export const subscriptionFileSchema = z.strictObject({
  plan: keySchema.optional(),
  started_at: timestampSchema.optional(),
  ended_at: timestampSchema.optional(),
  seats: decimalField({ integer: true, sign: "nonnegative" }).optional(),
  changes: z
    .array(
      z.strictObject({
        at: timestampSchema,
        seats: decimalField({ integer: true, sign: "nonnegative" }).optional(),
        plan: keySchema.optional(),
        usage: usageSchema.optional(),
      }),
      { error: "must be a list of changes" },
    )
    .default([]),
});

/** A validated plan (numbers as canonical decimal strings, defaults applied). */
export type Plan = z.output<typeof planSchema>;
/** A plan as written by hand or in TypeScript, before validation. */
export type PlanInput = z.input<typeof planSchema>;
/** A validated price. */
export type Price = z.output<typeof priceSchema>;
/** A validated tier. */
export type Tier = z.output<typeof tierSchema>;
/** A validated discount. */
export type Discount = z.output<typeof discountSchema>;
/** A validated catalog: the plans and whatever other top-level sections the file has. */
export type Catalog = z.output<typeof catalogSchema>;
/** A validated usage map: meter key → canonical decimal string. */
export type Usage = z.output<typeof usageSchema>;
/** A validated subscription file. */
export type SubscriptionFile = z.output<typeof subscriptionFileSchema>;
/** Billing interval of a plan. */
export type Interval = z.output<typeof intervalSchema>;
