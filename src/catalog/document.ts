import { z } from "zod";
import {
  duplicateKeyIssues,
  issuesFromZod,
  planSchema,
  type Plan,
  type RatingIssue,
} from "../rating/index.js";
import { accountIssues, accountsSchema, type Accounts } from "./accounts.js";
import { customerSchema, type Customer } from "./customer.js";
import { CatalogInputError, parseCatalogText } from "./file.js";
import { meterSchema, type MeterDefinition } from "./meter.js";
import { subscriptionSchema, type Subscription } from "./subscription.js";

/** The sections of a catalog document; each is optional, only those present are applied. */
export interface CatalogDocument {
  meters?: MeterDefinition[];
  plans?: Plan[];
  customers?: Customer[];
  subscriptions?: Subscription[];
  /** The chart of accounts the journal posts to (replaces the stored chart as a whole). */
  accounts?: Accounts;
}

const sections = ["meters", "plans", "customers", "subscriptions", "accounts"] as const;

const documentSchema = z
  .strictObject({
    meters: z
      .array(meterSchema, { error: "must be a list of meters" })
      .max(1000, "at most 1000 meters")
      .optional(),
    plans: z
      .array(planSchema, { error: "must be a list of plans" })
      .max(1000, "at most 1000 plans")
      .optional(),
    customers: z
      .array(customerSchema, { error: "must be a list of customers" })
      .max(100_000, "at most 100,000 customers per document")
      .optional(),
    subscriptions: z
      .array(subscriptionSchema, { error: "must be a list of subscriptions" })
      .max(100_000, "at most 100,000 subscriptions per document")
      .optional(),
    accounts: z.unknown().optional(),
  })
  .superRefine((doc, ctx) => {
    if (doc.meters) duplicateKeyIssues("meters", "meter")(doc, ctx);
    if (doc.plans) duplicateKeyIssues("plans", "plan")(doc, ctx);
    if (doc.customers) duplicateKeyIssues("customers", "customer")(doc, ctx);
    if (doc.subscriptions) duplicateKeyIssues("subscriptions", "subscription")(doc, ctx);
  });

/** What is already stored, for checking references (the store's current objects). */
export interface CatalogLookup {
  meter(key: string): MeterDefinition | undefined;
  plan(key: string): Plan | undefined;
  customer(key: string): Customer | undefined;
  /** Stored subscriptions (a changed customer or plan must not break them). */
  subscriptions(): readonly Subscription[];
  /** Every stored plan (a chart without a default revenue account must map all their prices). */
  plans?(): readonly Plan[];
  /** The stored chart of accounts, if any (plans applied later must fit it). */
  accounts?(): Accounts | undefined;
}

/**
 * Parses a whole catalog document (YAML or JSON): `meters:`, `plans:`, `customers:`,
 * `subscriptions:`, each optional (at least one), every field validated and every reference
 * checked against the document and what is stored.
 * @throws CatalogInputError naming each bad field (`subscriptions[3].plan`); nothing is applied.
 */
export function parseCatalogDocument(text: string, stored: CatalogLookup): CatalogDocument {
  return validateCatalogDocument(parseCatalogText(text), stored);
}

/** {@link parseCatalogDocument} for an already-parsed document (a JSON body). */
export function validateCatalogDocument(doc: unknown, stored: CatalogLookup): CatalogDocument {
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new CatalogInputError([{ path: "", message: `must be a map with any of ${sections.join(", ")}` }]);
  }
  if (!sections.some((s) => s in doc)) {
    throw new CatalogInputError([{ path: "", message: `has none of ${sections.join(", ")}` }]);
  }
  const r = documentSchema.safeParse(doc, { reportInput: true });
  const a = "accounts" in doc ? accountsSchema.safeParse(doc.accounts, { reportInput: true }) : undefined;
  const shapeIssues = [
    ...(r.success ? [] : issuesFromZod(r.error)),
    ...(a === undefined || a.success
      ? []
      : issuesFromZod(a.error).map((i) => ({
          ...i,
          path: i.path === "" ? "accounts" : `accounts.${i.path}`,
        }))),
  ];
  if (!r.success || (a !== undefined && !a.success)) throw new CatalogInputError(shapeIssues);
  const { accounts: _raw, ...rest } = r.data;
  const parsed: CatalogDocument = a?.success ? { ...rest, accounts: a.data } : rest;
  const issues = referenceIssues(parsed, stored);
  if (issues.length > 0) throw new CatalogInputError(issues);
  return parsed;
}

/** Every reference of the document, checked against the document overlaid on what is stored. */
function referenceIssues(doc: CatalogDocument, stored: CatalogLookup): RatingIssue[] {
  const issues: RatingIssue[] = [];
  const byKey = <T extends { key: string }>(items: readonly T[] | undefined) =>
    new Map((items ?? []).map((x, i) => [x.key, { x, i }]));
  const meters = byKey(doc.meters);
  const plans = byKey(doc.plans);
  const customers = byKey(doc.customers);
  const meterOf = (k: string) => meters.get(k)?.x ?? stored.meter(k);
  const planOf = (k: string) => plans.get(k)?.x ?? stored.plan(k);
  const customerOf = (k: string) => customers.get(k)?.x ?? stored.customer(k);

  doc.plans?.forEach((plan, i) =>
    plan.prices.forEach((price, j) => {
      if (price.meter !== undefined && meterOf(price.meter) === undefined) {
        issues.push({
          path: `plans[${i}].prices[${j}].meter`,
          message: `no meter ${JSON.stringify(price.meter)} in this document or the catalog`,
        });
      }
    }),
  );

  const check = (
    s: Subscription,
    at: (field: string) => string,
    blame?: (what: "plan" | "customer", key: string) => string | undefined,
  ) => {
    const where = (field: string, what: "plan" | "customer", key: string) => blame?.(what, key) ?? at(field);
    const customer = customerOf(s.customer);
    if (customer === undefined) {
      issues.push({
        path: at("customer"),
        message: `no customer ${JSON.stringify(s.customer)} in this document or the catalog`,
      });
    }
    const planKeys: [string, string][] = [
      ["plan", s.plan],
      ...s.phases.map((p, k): [string, string] => [`phases[${k}].plan`, p.plan]),
    ];
    const first = planOf(s.plan);
    let needsSeats = false;
    for (const [field, key] of planKeys) {
      const plan = planOf(key);
      if (plan === undefined) {
        issues.push({
          path: at(field),
          message: `no plan ${JSON.stringify(key)} in this document or the catalog`,
        });
        continue;
      }
      if (customer !== undefined && plan.currency !== customer.currency) {
        issues.push({
          path: where(field, plans.has(key) ? "plan" : "customer", plans.has(key) ? key : s.customer),
          message: `plan ${key} bills in ${plan.currency.toUpperCase()} but customer ${s.customer} is invoiced in ${customer.currency.toUpperCase()} (subscription ${s.key})`,
        });
      }
      if (
        first !== undefined &&
        (plan.interval !== first.interval || plan.interval_count !== first.interval_count)
      ) {
        issues.push({
          path: at(field),
          message: `plan ${key} bills every ${plan.interval_count} ${plan.interval} but the subscription's periods are every ${first.interval_count} ${first.interval} (start a new subscription to change the interval)`,
        });
      }
      if (plan.prices.some((p) => p.type === "seat")) needsSeats = true;
    }
    if (needsSeats && s.seats === undefined) {
      issues.push({
        path: at("seats"),
        message: "a plan of this subscription has a seat price: give seats (quantity, schedule or meter)",
      });
    }
    if (s.seats?.meter !== undefined && meterOf(s.seats.meter) === undefined) {
      issues.push({
        path: at("seats.meter"),
        message: `no meter ${JSON.stringify(s.seats.meter)} in this document or the catalog`,
      });
    }
  };

  const inDoc = new Set<string>();
  doc.subscriptions?.forEach((s, i) => {
    inDoc.add(s.key);
    check(s, (f) => `subscriptions[${i}].${f}`);
  });
  // A changed customer currency or plan must not break a stored subscription.
  if (doc.customers !== undefined || doc.plans !== undefined) {
    for (const s of stored.subscriptions()) {
      if (inDoc.has(s.key)) continue;
      const touched =
        customers.has(s.customer) || plans.has(s.plan) || s.phases.some((p) => plans.has(p.plan));
      if (!touched) continue;
      check(
        s,
        (f) => `subscriptions(stored ${s.key}).${f}`,
        (what, key) =>
          what === "plan"
            ? `plans[${plans.get(key)?.i}].currency`
            : `customers[${customers.get(key)?.i}].currency`,
      );
    }
  }
  // The chart of accounts (issue 12): its mappings name real prices, and without a default
  // revenue account every price of every plan (in the document or stored) has an account.
  const chart = doc.accounts ?? stored.accounts?.();
  if (chart !== undefined && (doc.accounts !== undefined || doc.plans !== undefined)) {
    const all = new Map<string, { plan: Plan; index?: number }>();
    for (const p of stored.plans?.() ?? []) all.set(p.key, { plan: p });
    doc.plans?.forEach((p, i) => all.set(p.key, { plan: p, index: i }));
    issues.push(...accountIssues(chart, doc.accounts !== undefined, all));
  }
  return issues;
}
