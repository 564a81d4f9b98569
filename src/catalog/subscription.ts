import { z } from "zod";
import { decimalField, discountSchema, keySchema, timestampSchema } from "../rating/index.js";
import { customerKeySchema, metadataSchema } from "./customer.js";
import { meterKeyPattern } from "./meter.js";

/** A seat count, kept as a canonical decimal string like every quantity rating takes. */
const seatCount = decimalField({ integer: true, sign: "nonnegative", max: "1000000000" });

/**
 * Where a seat price takes its quantity: a fixed count, a schedule of counts (`[{ at, quantity }]`,
 * each holding from `at` until the next), or a seat meter (e.g. `peak` of seat events), read for
 * the billing period through the usage query path like any metered price.
 */
const seatsSchema = z
  .strictObject({
    quantity: seatCount.optional(),
    schedule: z
      .array(z.strictObject({ at: timestampSchema, quantity: seatCount }), {
        error: "must be a list of { at, quantity }",
      })
      .default([]),
    meter: z
      .string({ error: "must be a meter key" })
      .regex(meterKeyPattern, "must be a meter key")
      .optional(),
  })
  .superRefine((s, ctx) => {
    if (s.meter !== undefined && (s.quantity !== undefined || s.schedule.length > 0)) {
      ctx.addIssue({
        code: "custom",
        path: ["meter"],
        message: "give either meter or quantity/schedule, not both",
      });
    }
    if (s.meter === undefined && s.quantity === undefined && s.schedule.length === 0) {
      ctx.addIssue({ code: "custom", path: [], message: "needs quantity, schedule or meter" });
    }
    increasing(s.schedule, "schedule", ctx);
  });

/**
 * Usage alerts of a subscription: `usage.threshold_crossed` webhooks fired once per billing
 * period and threshold when the current period's usage passes `included_percent` of a metered
 * price's included quantity, or its charges so far pass a `spend` amount (in the customer's
 * currency, major units: "500.00"). Evaluated by the close role (src/webhooks/thresholds.ts).
 */
const usageAlertsSchema = z
  .strictObject({
    included_percent: z
      .array(decimalField({ integer: true, sign: "positive", max: "1000" }), {
        error: "must be a list of percentages such as [80, 100]",
      })
      .max(10, "at most 10 thresholds")
      .default([]),
    spend: z
      .array(decimalField({ sign: "positive", maxFractionDigits: 4 }), {
        error: 'must be a list of amounts such as ["500.00"]',
      })
      .max(10, "at most 10 thresholds")
      .default([]),
  })
  .superRefine((a, ctx) => {
    a.included_percent.forEach((p, i) => {
      if (a.included_percent.indexOf(p) !== i)
        ctx.addIssue({ code: "custom", path: ["included_percent", i], message: `${p} is listed twice` });
    });
    if (a.included_percent.length === 0 && a.spend.length === 0)
      ctx.addIssue({ code: "custom", path: [], message: "needs included_percent or spend" });
  });

/** A plan change: from `at` on, the subscription is billed under `plan`. */
const phaseSchema = z.strictObject({ at: timestampSchema, plan: keySchema });

function increasing(items: readonly { at: string }[], path: string, ctx: z.RefinementCtx): void {
  for (let i = 1; i < items.length; i++) {
    if (Date.parse(items[i]!.at) <= Date.parse(items[i - 1]!.at)) {
      ctx.addIssue({ code: "custom", path: [path, i, "at"], message: `must be after ${path}[${i - 1}].at` });
    }
  }
}

/**
 * A subscription: a customer billed under a plan from `started_at` (until `ended_at`), in billing
 * periods of the plan's interval anchored at `billing_anchor` in the customer's time zone.
 * Plan changes are `phases`; seats come from `seats`; `discounts` add to the plan's own.
 */
export const subscriptionSchema = z
  .strictObject({
    key: keySchema,
    customer: customerKeySchema,
    plan: keySchema,
    started_at: timestampSchema,
    ended_at: timestampSchema.optional(),
    /**
     * Where Tally's billing starts, for a subscription billed elsewhere before (a migration):
     * periods ending at or before it are not invoiced; a period it falls inside is billed from
     * it (fees prorated, usage from it on). Discount durations still count from `started_at`.
     * @default started_at
     */
    billing_starts_at: timestampSchema.optional(),
    /**
     * Periods start at this instant's local date and time in the customer's time zone, stepped by
     * the plan's interval both ways (a 31st becomes the last day of shorter months); a subscription
     * starting between two boundaries has a shorter, prorated first period. @default started_at
     */
    billing_anchor: timestampSchema.optional(),
    phases: z.array(phaseSchema, { error: "must be a list of { at, plan }" }).default([]),
    seats: seatsSchema.optional(),
    discounts: z.array(discountSchema, { error: "must be a list of discounts" }).default([]),
    /** `usage.threshold_crossed` webhooks (see usageAlertsSchema). */
    usage_alerts: usageAlertsSchema.optional(),
    metadata: metadataSchema.default({}),
  })
  .superRefine((s, ctx) => {
    const start = Date.parse(s.started_at);
    if (s.ended_at !== undefined && Date.parse(s.ended_at) <= start) {
      ctx.addIssue({ code: "custom", path: ["ended_at"], message: "must be after started_at" });
    }
    if (s.billing_starts_at !== undefined) {
      const billing = Date.parse(s.billing_starts_at);
      if (billing < start) {
        ctx.addIssue({
          code: "custom",
          path: ["billing_starts_at"],
          message: "must be at or after started_at",
        });
      } else if (s.ended_at !== undefined && billing >= Date.parse(s.ended_at)) {
        ctx.addIssue({ code: "custom", path: ["billing_starts_at"], message: "must be before ended_at" });
      }
    }
    s.phases.forEach((p, i) => {
      const at = Date.parse(p.at);
      if (at <= start) {
        ctx.addIssue({
          code: "custom",
          path: ["phases", i, "at"],
          message: "must be after started_at (change plan instead)",
        });
      } else if (s.ended_at !== undefined && at >= Date.parse(s.ended_at)) {
        ctx.addIssue({ code: "custom", path: ["phases", i, "at"], message: "must be before ended_at" });
      }
    });
    increasing(s.phases, "phases", ctx);
  });

/** A validated subscription. */
export type Subscription = z.output<typeof subscriptionSchema>;
/** A subscription as written in the catalog file. */
export type SubscriptionInput = z.input<typeof subscriptionSchema>;
