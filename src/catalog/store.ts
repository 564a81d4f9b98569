import type { JetStreamClient } from "nats";
import type { Logger } from "../observability/index.js";
import { planSchema, type Plan } from "../rating/index.js";
import { chartKey, parseStoredChart, type AccountChart, type Accounts } from "./accounts.js";
import { customerSchema, type Customer } from "./customer.js";
import type { CatalogDocument, CatalogLookup } from "./document.js";
import { meterSchema, type Meter, type MeterDefinition } from "./meter.js";
import { subscriptionSchema, type Subscription } from "./subscription.js";
import { VersionedCollection, type ApplyResult, type VersionedKind } from "./versioned.js";

function parser<D>(schema: { safeParse(v: unknown): { success: true; data: D } | { success: false } }) {
  return (v: unknown): D | null => {
    const r = schema.safeParse(v);
    return r.success ? r.data : null;
  };
}

/**
 * Where each kind lives in the catalog bucket. Meters keep the names they always had; keys that
 * are not KV-safe (customer keys are any text) are encoded, see `kvToken`.
 */
const kinds = {
  meters: { noun: "meter", pointer: "meters", history: "meter_versions", parse: parser(meterSchema) },
  plans: { noun: "plan", pointer: "plans", history: "plan_versions", parse: parser(planSchema) },
  customers: {
    noun: "customer",
    pointer: "customers",
    history: "customer_versions",
    parse: parser(customerSchema),
  },
  subscriptions: {
    noun: "subscription",
    pointer: "subscriptions",
    history: "subscription_versions",
    parse: parser(subscriptionSchema),
  },
  // The chart of accounts: one object (`accounts.chart`), versioned like the others so a journal
  // entry can name the chart version it was posted with.
  accounts: {
    noun: "chart of accounts",
    pointer: "accounts",
    history: "accounts_versions",
    parse: parseStoredChart,
  },
} satisfies Record<string, VersionedKind<{ key: string }>>;

/**
 * The catalog in one NATS KV bucket (`<prefix>_catalog`): meters, plans, customers and
 * subscriptions, each versioned (see {@link VersionedCollection}): an invoice names the
 * versions it was computed from, and every version stays readable.
 *
 * The meter methods (`get`, `list`, `history`, `apply`) are kept at the top level: the usage
 * path reads meters on every request.
 */
export class CatalogStore {
  readonly meters: VersionedCollection<MeterDefinition>;
  readonly plans: VersionedCollection<Plan>;
  readonly customers: VersionedCollection<Customer>;
  readonly subscriptions: VersionedCollection<Subscription>;
  /** The chart of accounts (at most one object, key `chart`). */
  readonly accounts: VersionedCollection<AccountChart>;

  private constructor(
    collections: Pick<CatalogStore, "meters" | "plans" | "customers" | "subscriptions" | "accounts">,
  ) {
    this.meters = collections.meters;
    this.plans = collections.plans;
    this.customers = collections.customers;
    this.subscriptions = collections.subscriptions;
    this.accounts = collections.accounts;
  }

  /** `crashAfterClaim`: fault injection for crash tests (TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM). */
  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    log?: Logger,
    crashAfterClaim = false,
  ): Promise<CatalogStore> {
    const kv = await js.views.kv(bucket, { history: 10, replicas });
    return new CatalogStore({
      meters: new VersionedCollection(kv, kinds.meters, log, crashAfterClaim),
      plans: new VersionedCollection(kv, kinds.plans, log, crashAfterClaim),
      customers: new VersionedCollection(kv, kinds.customers, log, crashAfterClaim),
      subscriptions: new VersionedCollection(kv, kinds.subscriptions, log, crashAfterClaim),
      accounts: new VersionedCollection(kv, kinds.accounts, log, crashAfterClaim),
    });
  }

  private all() {
    return [this.meters, this.plans, this.customers, this.subscriptions, this.accounts];
  }

  /** Loads every current object and keeps following changes until {@link close}. */
  async start(): Promise<void> {
    await Promise.all(this.all().map((c) => c.start()));
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((c) => c.close()));
  }

  /** The current version of a meter, or undefined. */
  get(key: string): Meter | undefined {
    return this.meters.get(key);
  }

  /** Every current meter, by key. */
  list(): Meter[] {
    return this.meters.list();
  }

  /** Every version of a meter, oldest first (empty when the meter never existed). */
  history(key: string): Promise<Meter[]> {
    return this.meters.history(key);
  }

  /** Applies meter definitions (already validated); see {@link VersionedCollection.apply}. */
  apply(defs: readonly MeterDefinition[], now = new Date()): Promise<ApplyResult[]> {
    return this.meters.apply(defs, now);
  }

  /** The current catalog, for checking a document's references (see `parseCatalogDocument`). */
  lookup(): CatalogLookup {
    return {
      meter: (k) => this.meters.get(k),
      plan: (k) => this.plans.get(k),
      customer: (k) => this.customers.get(k),
      subscriptions: () => this.subscriptions.list(),
      plans: () => this.plans.list(),
      accounts: () => this.chart(),
    };
  }

  /** The current chart of accounts, or undefined when the catalog has no `accounts:` section. */
  chart(): (Accounts & { version: number }) | undefined {
    return this.accounts.get(chartKey);
  }

  /**
   * Applies a validated catalog document, in reference order (meters, plans, customers,
   * subscriptions, accounts), so that whatever a process reads mid-apply only references what exists.
   * Each object is versioned on its own; re-applying after a crash finishes the job.
   */
  async applyDocument(doc: CatalogDocument, now = new Date()): Promise<CatalogApplyResult> {
    return {
      meters: await this.meters.apply(doc.meters ?? [], now),
      plans: await this.plans.apply(doc.plans ?? [], now),
      customers: await this.customers.apply(doc.customers ?? [], now),
      subscriptions: await this.subscriptions.apply(doc.subscriptions ?? [], now),
      // Last: its mappings name plans applied above.
      accounts: await this.accounts.apply(doc.accounts ? [{ ...doc.accounts, key: chartKey }] : [], now),
    };
  }
}

/** What {@link CatalogStore.applyDocument} did, per section. */
export interface CatalogApplyResult {
  meters: ApplyResult[];
  plans: ApplyResult[];
  customers: ApplyResult[];
  subscriptions: ApplyResult[];
  accounts: ApplyResult[];
}
