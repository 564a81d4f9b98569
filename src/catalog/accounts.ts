import { z } from "zod";
import type { Plan, RatingIssue } from "../rating/index.js";

/**
 * The `accounts:` section of a catalog document: the chart of account codes the journal
 * (src/accounting) posts to, by role, and which revenue account each price's lines go to.
 *
 * Codes follow Xero's `Account.Code` (customer-defined, "max length = 10", XeroAPI
 * `xero_accounting.yaml`), restricted to characters every ledger we target accepts in a code.
 */
export const accountCodeSchema = z
  .string({ error: "must be an account code (a string)" })
  .regex(/^[A-Za-z0-9._-]{1,10}$/, "must be 1 to 10 of A-Z a-z 0-9 . _ - (Xero's account code limit)");

/**
 * One price mapped to a revenue account. A list of `{ plan, price, account }`, not a
 * `"<plan>.<price>": code` map: plan and price keys may contain dots, so such a key is ambiguous.
 */
const priceAccountSchema = z.strictObject({
  plan: z.string({ error: "must be a plan key" }).min(1, "must be a plan key"),
  price: z.string({ error: "must be a price key" }).min(1, "must be a price key"),
  account: accountCodeSchema,
});

export const accountsSchema = z
  .strictObject({
    /** Accounts receivable: debited by invoices, credited by credit notes and payments. */
    receivable: accountCodeSchema,
    /** Cash (or the Stripe clearing account): debited by payments. */
    cash: accountCodeSchema,
    /** Deferred revenue (a contract liability): service billed for months after the entry's. */
    deferred_revenue: accountCodeSchema,
    /** Contra-revenue: discount lines are debited here. */
    discounts: accountCodeSchema,
    /** The default revenue account; without it every price of every plan must be mapped. */
    revenue: accountCodeSchema.optional(),
    /** Minimum-commitment top-up lines (default: `revenue`). */
    minimum_commitment: accountCodeSchema.optional(),
    /** Spend-cap adjustment lines (negative; default: `revenue`). */
    spend_cap: accountCodeSchema.optional(),
    prices: z
      .array(priceAccountSchema, { error: "must be a list of { plan, price, account }" })
      .max(100_000, "at most 100,000 price mappings")
      .default([]),
  })
  .superRefine((a, ctx) => {
    const seen = new Map<string, number>();
    a.prices.forEach((m, i) => {
      const k = `${m.plan}\u0000${m.price}`;
      const first = seen.get(k);
      if (first !== undefined)
        ctx.addIssue({
          code: "custom",
          path: ["prices", i],
          message: `maps plan ${m.plan} price ${m.price} again (first at prices[${first}])`,
        });
      else seen.set(k, i);
    });
  });

export type AccountsInput = z.input<typeof accountsSchema>;
/** The chart as applied (the catalog stores it as one versioned object with key `chart`). */
export type Accounts = z.output<typeof accountsSchema>;
/** The stored form: one object, key {@link chartKey}. */
export type AccountChart = Accounts & { key: string };

/** The key of the one chart object in the catalog bucket (`accounts.chart`). */
export const chartKey = "chart";

/** Validates a stored chart (`{ key: "chart", ...accounts }`); null when malformed. */
export function parseStoredChart(v: unknown): AccountChart | null {
  if (v === null || typeof v !== "object") return null;
  const { key, ...rest } = v as Record<string, unknown>;
  if (key !== chartKey) return null;
  const r = accountsSchema.safeParse(rest);
  return r.success ? { ...r.data, key } : null;
}

/** The revenue account of a price, or undefined when neither mapped nor defaulted. */
export function priceAccount(chart: Accounts, plan: string, price: string): string | undefined {
  return chart.prices.find((m) => m.plan === plan && m.price === price)?.account ?? chart.revenue;
}

/**
 * What a chart requires of the plans: a mapping must name a plan and price that exist, and
 * without a default revenue account every price (and commitment or cap) must be mapped.
 * `plans`: the plans as they will be (the document overlaid on what is stored), each with where
 * it is in the document (index) when it is there.
 */
export function accountIssues(
  chart: Accounts,
  chartInDocument: boolean,
  plans: ReadonlyMap<string, { plan: Plan; index?: number }>,
): RatingIssue[] {
  const issues: RatingIssue[] = [];
  if (chartInDocument) {
    chart.prices.forEach((m, k) => {
      const p = plans.get(m.plan);
      if (p === undefined) {
        issues.push({
          path: `accounts.prices[${k}].plan`,
          message: `no plan ${JSON.stringify(m.plan)} in this document or the catalog`,
        });
      } else if (!p.plan.prices.some((x) => x.key === m.price)) {
        issues.push({
          path: `accounts.prices[${k}].price`,
          message: `plan ${m.plan} has no price ${JSON.stringify(m.price)}`,
        });
      }
    });
  }
  if (chart.revenue !== undefined) return issues;
  const mapped = new Set(chart.prices.map((m) => `${m.plan}\u0000${m.price}`));
  for (const [key, { plan, index }] of plans) {
    // A plan in the document is blamed at its own field; a stored one at the chart (it is the
    // document's accounts section that leaves it unmapped).
    plan.prices.forEach((price, j) => {
      if (mapped.has(`${key}\u0000${price.key}`)) return;
      issues.push({
        path: index !== undefined ? `plans[${index}].prices[${j}]` : "accounts.prices",
        message: `price ${price.key} of plan ${key} has no revenue account: map it in accounts.prices or set accounts.revenue`,
      });
    });
    for (const role of ["minimum_commitment", "spend_cap"] as const) {
      if (plan[role] === undefined || chart[role] !== undefined) continue;
      issues.push({
        path: index !== undefined ? `plans[${index}].${role}` : `accounts.${role}`,
        message: `plan ${key} has a ${role.replace("_", " ")} but the chart has no accounts.${role} or accounts.revenue`,
      });
    }
  }
  return issues;
}
