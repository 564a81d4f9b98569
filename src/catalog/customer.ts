import { isValidZone } from "../usage/windows.js";
import { z } from "zod";
import { isWellFormed } from "../events/index.js";
import { eventLimits } from "../events/limits.js";
import { currencySchema } from "../rating/index.js";

/** Stripe's metadata limits (50 keys, 40-character keys, 500-character values), so metadata can travel there. */
export const metadataSchema = z
  .record(
    z.string().min(1, "metadata keys must not be empty").max(40, "metadata keys are at most 40 characters"),
    z
      .string({ error: "metadata values must be strings" })
      .max(500, "metadata values are at most 500 characters"),
    { error: "must be an object of string values" },
  )
  .refine((m) => Object.keys(m).length <= 50, "at most 50 metadata keys");

/** An IANA time zone name (`Europe/Berlin`); billing periods follow it. */
export const timezoneSchema = z
  .string({ error: "must be an IANA time zone name such as Europe/Berlin" })
  .refine((tz) => isValidZone(tz), {
    error: (i) =>
      `unknown IANA time zone ${JSON.stringify(i.input)} (e.g. Europe/Berlin, America/New_York, UTC)`,
  });

/**
 * Ids of the customer in other systems. `stripe_customer_id` is checked for Stripe's shape; other
 * keys (`xero_contact_id`, `hubspot_company_id`, …) are free-form.
 */
const externalIdsSchema = z
  .record(
    z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, "external id names are lowercase letters, digits and _"),
    z
      .string({ error: "external ids must be strings" })
      .min(1, "must not be empty")
      .max(256, "at most 256 characters"),
    { error: "must be an object such as { stripe_customer_id: cus_... }" },
  )
  .superRefine((ids, ctx) => {
    const stripe = ids.stripe_customer_id;
    if (stripe !== undefined && !/^cus_[A-Za-z0-9]{1,250}$/.test(stripe)) {
      ctx.addIssue({
        code: "custom",
        path: ["stripe_customer_id"],
        message: "must be a Stripe customer id (cus_...)",
      });
    }
  });

/** A customer's key: exactly the `customer` of their events. */
export const customerKeySchema = z
  .string({ error: "must be a string" })
  .min(1, "must not be empty")
  .max(eventLimits.customerMaxLength, `must be at most ${eventLimits.customerMaxLength} characters`)
  .refine(isWellFormed, "must be well-formed Unicode (no lone UTF-16 surrogate)");

/**
 * A customer: who is billed. `key` is the `customer` of the customer's events, so it takes any
 * text an event's `customer` takes.
 */
export const customerSchema = z.strictObject({
  key: customerKeySchema,
  name: z.string({ error: "must be a string" }).min(1).max(256).optional(),
  email: z.email({ error: "must be an email address" }).optional(),
  /** The currency the customer is invoiced in; every plan they subscribe to must use it. */
  currency: currencySchema,
  /** Billing periods start at local midnight (or the anchor's local time) in this zone. @default UTC */
  timezone: timezoneSchema.default("UTC"),
  external_ids: externalIdsSchema.default({}),
  metadata: metadataSchema.default({}),
});

/** A validated customer. */
export type Customer = z.output<typeof customerSchema>;
/** A customer as written in the catalog file. */
export type CustomerInput = z.input<typeof customerSchema>;
