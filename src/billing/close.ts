import pMap from "p-map";
import type { CatalogStore, Customer, Meter, Subscription, Versioned } from "../catalog/index.js";
import { parseDuration } from "../config/index.js";
import type { Logger } from "../observability/index.js";
import type { Plan } from "../rating/index.js";
import {
  metersOf,
  numberLines,
  rateRecord,
  ratingRecord,
  segmentsOf,
  trueUpLines,
  type RatingRecord,
  type Segment,
  type SegmentUsage,
} from "./build.js";
import type { Invoice, InvoiceLine, UsageSnapshot } from "./invoice.js";
import { invoiceId, type InvoiceStore } from "./invoice-store.js";
import { endedPeriods, periodAt, type BillingPeriodSlot, type PeriodRule } from "./periods.js";

/** One metered quantity the close needs: a meter, a customer, an event-time window, a cutoff. */
export interface SnapshotRequest {
  meter: Meter;
  customer: string;
  fromMs: number;
  toMs: number;
  /** Only events received at or before this instant count (the bitemporal cut). */
  cutoffMs: number;
}

/**
 * Reads usage for the close through the one usage query path. Takes every request of a round at
 * once so an implementation can answer all customers of one meter and window in one query.
 */
export interface Snapshotter {
  snapshot(requests: readonly SnapshotRequest[]): Promise<UsageSnapshot[]>;
}

/** What the close needs; built by the close role, or by tests with their own servers. */
export interface CloseDeps {
  catalog: CatalogStore;
  invoices: InvoiceStore;
  snapshots: Snapshotter;
  /** The freshness watermark (ms): every event acknowledged before it is countable. */
  watermark: () => Promise<number>;
  log: Logger;
  settings: CloseSettings;
}

export interface CloseSettings {
  /** How long after a period's end it is closed (late events still arriving), unless the plan says otherwise. */
  graceMs: number;
  /** Prefix of invoice numbers (`TALLY` → `TALLY-000042`). */
  issuerPrefix: string;
  /** Oldest accepted event time (days): periods older than this cannot get late usage any more. */
  backfillDays: number;
  /** Drafts finalized per numbering batch. @default 1000 */
  finalizeBatch?: number;
}

/** What one run of the close did. */
export interface CloseReport {
  /** Invoices finalized by this run (ids). */
  finalized: string[];
  /** Drafts built in a dry run (nothing stored). */
  drafts: Invoice[];
  /** Periods due but not closed yet because the watermark has not passed their cutoff. */
  waiting: { subscription: string; period_start: string; cutoff: string }[];
  /** Subscriptions that could not be closed, with why (the others go on). */
  errors: { subscription: string; message: string }[];
}

const DAY_MS = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();

/** The period rule of a subscription (see periods.ts). */
export function periodRule(sub: Subscription, customer: Customer, plan: Plan): PeriodRule {
  return {
    interval: plan.interval,
    intervalCount: Number(plan.interval_count),
    timezone: customer.timezone,
    anchorMs: Date.parse(sub.billing_anchor ?? sub.started_at),
    startMs: Date.parse(sub.started_at),
    ...(sub.ended_at !== undefined ? { endMs: Date.parse(sub.ended_at) } : {}),
  };
}

/** Work for one subscription in one round: its next unfinalized period and its true-up candidates. */
interface Job {
  sub: Versioned<Subscription>;
  customer: Versioned<Customer>;
  period: BillingPeriodSlot;
  id: string;
  cutoffMs: number;
  segments: Segment[];
  /** Earlier finalized invoices still inside the backfill horizon (late usage may have arrived). */
  earlier: {
    invoice: Invoice;
    period: BillingPeriodSlot;
    segments: Segment[];
    billedUsage: Record<string, string>[];
  }[];
}

/**
 * Closes every due subscription period: snapshot → rate → store the draft → finalize with a
 * gapless number. Idempotent and resumable: invoice ids are deterministic, a draft records its
 * cutoff on first creation (a re-run reads the same events), finalized invoices never change,
 * numbering survives a crash at any point (see InvoiceStore). Runs in rounds of at most one
 * period per subscription, so a period's invoice is finalized before the next one trues it up.
 */
export async function closeDue(
  deps: CloseDeps,
  nowMs: number,
  opts: { dryRun?: boolean } = {},
): Promise<CloseReport> {
  const report: CloseReport = { finalized: [], drafts: [], waiting: [], errors: [] };
  const done = new Set<string>();
  // Most subscription periods have no invoice yet: the summaries say so without a read each.
  await deps.invoices.follow();
  for (let round = 0; round < 1000; round++) {
    const watermark = await deps.watermark();
    const pending = deps.catalog.subscriptions.list().filter((sub) => !done.has(sub.key));
    const found = await pMap(
      pending,
      async (sub) => {
        try {
          const job = await nextJob(deps, sub, nowMs, watermark, report);
          if (job === null) done.add(sub.key);
          return job;
        } catch (err: unknown) {
          done.add(sub.key);
          report.errors.push({ subscription: sub.key, message: (err as Error).message });
          deps.log.error({ err, subscription: sub.key }, "cannot close subscription");
          return null;
        }
      },
      { concurrency: 64 },
    );
    const jobs = found.filter((j): j is Job => j !== null);
    if (jobs.length === 0) break;
    const drafts = await buildDrafts(deps, jobs, report);
    if (opts.dryRun) {
      report.drafts.push(...drafts);
      for (const j of jobs) done.add(j.sub.key); // later periods would need this one finalized
      continue;
    }
    await deps.invoices.putDrafts(drafts);
    const batch = deps.settings.finalizeBatch ?? 1000;
    for (let i = 0; i < drafts.length; i += batch) {
      const finalized = await deps.invoices.finalize(
        drafts.slice(i, i + batch).map((d) => d.id),
        deps.settings.issuerPrefix,
      );
      report.finalized.push(...finalized.map((f) => f.id));
    }
  }
  return report;
}

async function nextJob(
  deps: CloseDeps,
  sub: Versioned<Subscription>,
  nowMs: number,
  watermark: number,
  report: CloseReport,
): Promise<Job | null> {
  const { catalog, invoices, settings } = deps;
  const customer = catalog.customers.get(sub.customer);
  if (customer === undefined) throw new Error(`customer ${sub.customer} is not in the catalog`);
  const plan = catalog.plans.get(sub.plan);
  if (plan === undefined) throw new Error(`plan ${sub.plan} is not in the catalog`);
  const graceMs = plan.grace_period !== undefined ? parseDuration(plan.grace_period) : settings.graceMs;
  const rule = periodRule(sub, customer, plan);
  const periods = endedPeriods(rule, nowMs - graceMs);
  for (let k = 0; k < periods.length; k++) {
    const period = periods[k]!;
    const id = invoiceId(sub.key, iso(period.start));
    const existing = await invoices.find(id);
    if (existing?.status === "finalized") continue;
    // The cutoff is recorded with the first draft: re-running the close reads the same events.
    const cutoffMs = existing !== null ? Date.parse(existing.cutoff) : period.end + graceMs;
    if (watermark < cutoffMs) {
      report.waiting.push({ subscription: sub.key, period_start: iso(period.start), cutoff: iso(cutoffMs) });
      return null;
    }
    const planOf = (key: string) => catalog.plans.get(key);
    const earlier = await earlierInvoices(deps, sub, periods.slice(0, k), cutoffMs);
    return { sub, customer, period, id, cutoffMs, segments: segmentsOf(sub, period, planOf), earlier };
  }
  return null;
}

/**
 * The finalized invoices of `periods` (oldest first) still inside the backfill horizon of
 * `cutoffMs`, newest first, each with the usage billed for it so far: its own record, or the
 * most recent true-up of it on a later invoice. True-ups of these travel on the next invoice.
 */
async function earlierInvoices(
  deps: CloseDeps,
  sub: Subscription,
  periods: readonly BillingPeriodSlot[],
  cutoffMs: number,
): Promise<Job["earlier"]> {
  const { catalog, invoices, settings } = deps;
  const earlier: Job["earlier"] = [];
  const horizon = cutoffMs - settings.backfillDays * DAY_MS;
  const later: Invoice[] = [];
  for (let j = periods.length - 1; j >= 0 && periods[j]!.end > horizon; j--) {
    const inv = await invoices.find(invoiceId(sub.key, iso(periods[j]!.start)));
    if (inv === null || inv.status !== "finalized") continue;
    const latest = later.find((l) => l.true_ups.some((t) => t.invoice === inv.id));
    const billedUsage =
      latest?.true_ups.find((t) => t.invoice === inv.id)?.usage.map((u) => ({ ...u })) ??
      inv.rating.segments.map((s) => s.usage);
    earlier.push({
      invoice: inv,
      period: periods[j]!,
      segments: await Promise.all(
        inv.rating.segments.map(async (s) => ({
          plan: await planVersion(catalog, s.plan, s.plan_version),
          from: Date.parse(s.from),
          to: Date.parse(s.to),
        })),
      ),
      billedUsage,
    });
    later.push(inv);
  }
  return earlier;
}

/**
 * The invoice a subscription's current period would get if it closed now (not stored): its usage
 * so far through the same query path and rating as the close, plus the true-ups of late usage
 * the next invoice will carry. `null` when the subscription is not active at `nowMs`.
 * @throws Error when the catalog lacks what the subscription references, or rating refuses.
 */
export async function upcomingInvoice(
  deps: CloseDeps,
  subscription: string,
  nowMs: number,
): Promise<Invoice | null> {
  const { catalog } = deps;
  const sub = catalog.subscriptions.get(subscription);
  if (sub === undefined) throw new Error(`no subscription ${subscription}`);
  const customer = catalog.customers.get(sub.customer);
  const plan = catalog.plans.get(sub.plan);
  if (customer === undefined || plan === undefined) {
    throw new Error(`subscription ${sub.key} references a customer or plan that is not in the catalog`);
  }
  const rule = periodRule(sub, customer, plan);
  const period = periodAt(rule, nowMs);
  if (period === null) return null;
  const earlier = await earlierInvoices(deps, sub, endedPeriods(rule, period.start), nowMs);
  const job: Job = {
    sub,
    customer,
    period,
    id: invoiceId(sub.key, iso(period.start)),
    cutoffMs: nowMs,
    segments: segmentsOf(sub, period, (key) => catalog.plans.get(key)),
    earlier,
  };
  const report: CloseReport = { finalized: [], drafts: [], waiting: [], errors: [] };
  const [draft] = await buildDrafts(deps, [job], report);
  if (draft === undefined)
    throw new Error(report.errors[0]?.message ?? "the upcoming invoice could not be built");
  return draft;
}

/**
 * Older plan versions read from a catalog's history, per catalog (versions are immutable, so an
 * entry never goes stale). Filled by {@link planVersion} before rating needs them synchronously.
 */
const planVersions = new WeakMap<CatalogStore, Map<string, Versioned<Plan>>>();

/** A plan version: the current one, or read once from the catalog history. */
async function planVersion(catalog: CatalogStore, key: string, version: number): Promise<Versioned<Plan>> {
  const p = catalog.plans.get(key);
  if (p !== undefined && p.version === version) return p;
  let cache = planVersions.get(catalog);
  if (cache === undefined) planVersions.set(catalog, (cache = new Map<string, Versioned<Plan>>()));
  let v = cache.get(`${key}\u0000${version}`);
  if (v === undefined) {
    v = await catalog.plans.version(key, version);
    if (v === undefined)
      throw new Error(`plan ${key} version ${version} is missing from the catalog history`);
    cache.set(`${key}\u0000${version}`, v);
  }
  return v;
}

/** {@link planVersion} for rating, which is synchronous: the version was loaded before. */
function planAt(catalog: CatalogStore, key: string, version: number): Versioned<Plan> {
  const p = catalog.plans.get(key);
  if (p !== undefined && p.version === version) return p;
  const v = planVersions.get(catalog)?.get(`${key}\u0000${version}`);
  if (v === undefined) throw new Error(`plan ${key} version ${version} was not loaded`);
  return v;
}

/** Snapshots every quantity of the round in one call, then builds each draft. */
async function buildDrafts(deps: CloseDeps, jobs: Job[], report: CloseReport): Promise<Invoice[]> {
  const requests: SnapshotRequest[] = [];
  const want = (
    sub: Subscription,
    segs: readonly Pick<Segment, "from" | "to" | "plan">[],
    cutoffMs: number,
  ) =>
    segs.map((seg) => {
      const indexes = new Map<string, number>();
      for (const key of metersOf(seg, sub)) {
        const meter = deps.catalog.meters.get(key);
        if (meter === undefined) throw new Error(`meter ${key} is not in the catalog`);
        indexes.set(key, requests.length);
        requests.push({ meter, customer: sub.customer, fromMs: seg.from, toMs: seg.to, cutoffMs });
      }
      return indexes;
    });
  const plan = jobs.map((job) => {
    try {
      return {
        job,
        current: want(job.sub, job.segments, job.cutoffMs),
        earlier: job.earlier.map((e) => want(job.sub, e.segments, job.cutoffMs)),
      };
    } catch (err: unknown) {
      report.errors.push({ subscription: job.sub.key, message: (err as Error).message });
      return null;
    }
  });
  const snaps = await deps.snapshots.snapshot(requests);
  const usageOf = (indexes: Map<string, number>[]): SegmentUsage[] =>
    indexes.map((m) => new Map([...m].map(([k, i]) => [k, snaps[i]!])));

  const drafts: Invoice[] = [];
  const now = new Date().toISOString();
  for (const p of plan) {
    if (p === null) continue;
    const { job } = p;
    try {
      const usage = usageOf(p.current);
      const rec = ratingRecord(job.sub, job.period, job.segments, usage);
      const plans = (key: string, version: number) => planAt(deps.catalog, key, version);
      const rated = rateRecord(rec, plans, job.sub.started_at);
      const lines: InvoiceLine[] = numberLines(rated.lines, job.segments, usage);
      const trueUps: Invoice["true_ups"][number][] = [];
      let subtotal = rated.subtotal;
      let total = rated.total;
      job.earlier.forEach((e, i) => {
        const nowUsage = usageOf(p.earlier[i]!);
        const nowQuantities = nowUsage.map((m) =>
          Object.fromEntries([...m].map(([k, s]) => [k, s.quantity])),
        );
        if (sameUsage(nowQuantities, e.billedUsage)) return;
        const before = rateRecord(e.invoice.rating, plans, job.sub.started_at, e.billedUsage);
        const after = rateRecord(e.invoice.rating, plans, job.sub.started_at, nowQuantities);
        const extra = trueUpLines(before, after, e.invoice, nowUsage, e.segments, lines.length + 1);
        lines.push(...extra);
        const delta = extra.reduce((s, l) => s + l.amount, 0);
        subtotal += delta;
        total += delta;
        trueUps.push({ invoice: e.invoice.id, usage: nowQuantities });
      });
      if (total < 0) {
        // Late usage only adds events, but a cap or tier can still move money back; an invoice
        // never goes below zero (the credit would need a credit note, not built yet).
        throw new Error(
          `invoice total would be ${total} (negative true-up); credit notes are not supported yet`,
        );
      }
      drafts.push({
        id: job.id,
        status: "draft",
        number: null,
        issuer_prefix: deps.settings.issuerPrefix,
        customer: job.customer.key,
        customer_version: job.customer.version,
        subscription: job.sub.key,
        subscription_version: job.sub.version,
        plans: uniquePlans(rec),
        currency: rated.currency,
        currency_exponent: rated.currency_exponent,
        period: rated.period,
        cutoff: iso(job.cutoffMs),
        lines,
        rating: rec,
        true_ups: trueUps,
        subtotal,
        total,
        created_at: now,
        finalized_at: null,
      });
    } catch (err: unknown) {
      report.errors.push({ subscription: job.sub.key, message: (err as Error).message });
      deps.log.error({ err, subscription: job.sub.key }, "cannot build invoice");
    }
  }
  return drafts;
}

function uniquePlans(rec: RatingRecord): { key: string; version: number }[] {
  const seen = new Map<string, { key: string; version: number }>();
  for (const s of rec.segments)
    seen.set(`${s.plan}\u0000${s.plan_version}`, { key: s.plan, version: s.plan_version });
  return [...seen.values()];
}

function sameUsage(a: readonly Record<string, string>[], b: readonly Record<string, string>[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((u, i) => {
    const v = b[i]!;
    const keys = new Set([...Object.keys(u), ...Object.keys(v)]);
    return [...keys].every((k) => (u[k] ?? "0") === (v[k] ?? "0"));
  });
}
