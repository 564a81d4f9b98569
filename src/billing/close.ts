import pMap from "p-map";
import type { CatalogStore, Customer, Meter, Subscription, Versioned } from "../catalog/index.js";
import { parseDuration } from "../config/index.js";
import type { Logger } from "../observability/index.js";
import type { Plan } from "../rating/index.js";
import type { WebhookEmitter } from "../webhooks/emitter.js";
import { invoiceFinalized } from "../webhooks/events.js";
import { emitAll } from "../webhooks/outbox.js";
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
import {
  adjustmentId,
  creditNoteId,
  creditNotePrefix,
  type Invoice,
  type InvoiceLine,
  type UsageSnapshot,
} from "./invoice.js";
import { cmp, invoiceId, type InvoiceStore } from "./invoice-store.js";
import {
  boundary,
  boundaryIndexAt,
  periodAt,
  periodFrom,
  type BillingPeriodSlot,
  type PeriodRule,
} from "./periods.js";

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
  /** Raises `invoice.finalized` for every document the close finalizes (src/webhooks); unset: none. */
  webhooks?: WebhookEmitter;
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
  /** Subscriptions whose usage is read, rated and stored together (pipelined). @default 5000 */
  chunk?: number;
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

/**
 * Where Tally's billing of a subscription starts: its start, or `billing_starts_at` (billed
 * elsewhere before). An instant, not a period boundary, so the chain's first link does not
 * depend on the time zone.
 */
export function billingStart(sub: Subscription): number {
  const start = Date.parse(sub.started_at);
  return sub.billing_starts_at === undefined ? start : Math.max(start, Date.parse(sub.billing_starts_at));
}

/** An earlier finalized invoice that a job may true up. */
interface Earlier {
  invoice: Invoice;
  segments: Segment[];
  billedUsage: Record<string, string>[];
}

/**
 * Work for one subscription in one round: its next unfinalized period (or, for an ended
 * subscription, a true-up-only round: no segments) and its true-up candidates.
 */
interface Job {
  sub: Versioned<Subscription>;
  customer: Versioned<Customer>;
  period: BillingPeriodSlot;
  id: string;
  cutoffMs: number;
  /** Empty for an ended subscription's true-up-only round. */
  segments: Segment[];
  /** Earlier finalized invoices still inside the backfill horizon (late usage may have arrived). */
  earlier: Earlier[];
  /**
   * False when, once this period is finalized, the subscription has nothing more due in this
   * run (its next period has not ended): the next round skips it instead of walking its chain
   * again. Unset: look again.
   */
  more?: boolean;
  /** Where the chain ends once this job's invoice is finalized (see `chainHeads`). */
  head?: ChainHead;
}

/**
 * Closes every due subscription period: snapshot → rate → store the draft → finalize with a
 * gapless number. Idempotent and resumable: invoice ids are deterministic, a draft records its
 * cutoff and its period on first creation (a re-run reads the same events for the same time),
 * finalized invoices never change, numbering survives a crash at any point (see InvoiceStore).
 * Runs in rounds of at most one period per subscription, so a period's invoice is finalized
 * before the next one trues it up.
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
    const phases = new Phases();
    const roundStart = performance.now();
    const watermark = await deps.watermark();
    const pending = deps.catalog.subscriptions.list().filter((sub) => !done.has(sub.key));
    const found = await pMap(
      pending,
      async (sub) => {
        try {
          const job = await nextJob(deps, sub, nowMs, watermark, report, opts.dryRun === true);
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
    phases.add("plan", performance.now() - roundStart);
    // In chunks of customers in key order: ClickHouse reads the next chunk's usage (a contiguous
    // range of its sort key) while this process rates and stores the current one.
    jobs.sort((a, b) => cmp(a.customer.key, b.customer.key) || cmp(a.sub.key, b.sub.key));
    const parts: Job[][] = [];
    const chunk = deps.settings.chunk ?? 5000;
    for (let i = 0; i < jobs.length; i += chunk) parts.push(jobs.slice(i, i + chunk));
    const build = (part: Job[]) => buildDrafts(deps, part, report, {}, phases);
    let next: ReturnType<typeof build> | null = build(parts[0]!);
    let invoices = 0;
    let creditNoteCount = 0;
    for (let p = 0; p < parts.length; p++) {
      const { drafts, creditNotes } = await next!;
      next = p + 1 < parts.length ? build(parts[p + 1]!) : null;
      // Awaited on the next pass; if this pass fails first, its rejection must not go unhandled.
      next?.catch(() => undefined);
      invoices += drafts.length;
      creditNoteCount += creditNotes.length;
      // A job that built nothing (an error, or an ended subscription's round without late usage)
      // would build the same nothing next round: it is done for this run.
      const built = new Set([...drafts, ...creditNotes].map((d) => d.subscription));
      for (const j of parts[p]!) if (!built.has(j.sub.key)) done.add(j.sub.key);
      if (opts.dryRun) {
        report.drafts.push(...drafts, ...creditNotes);
        for (const j of parts[p]!) done.add(j.sub.key); // later periods would need this one finalized
        continue;
      }
      // Credit notes are stored before their invoices are finalized: a finalized invoice names
      // its credit note, which must exist then (it is finalized right after, or by the next run).
      await phases.time("store", async () => {
        await deps.invoices.putDrafts(creditNotes);
        await deps.invoices.putDrafts(drafts);
      });
      const finalizedNow = new Set<string>();
      // Events of each numbering batch go to the outbox while the next batch is numbered
      // (publishes pipelined, see emitAll); all are acked before the round goes on.
      const emitting: Promise<void>[] = [];
      await phases.time("finalize", async () => {
        const batch = deps.settings.finalizeBatch ?? 1000;
        for (let i = 0; i < drafts.length; i += batch) {
          const finalized = await deps.invoices.finalize(
            drafts.slice(i, i + batch).map((d) => d.id),
            deps.settings.issuerPrefix,
          );
          for (const f of finalized) {
            report.finalized.push(f.id);
            finalizedNow.add(f.id);
          }
          if (deps.webhooks !== undefined) {
            const sent = emitAll(deps.webhooks, finalized.map(invoiceFinalized));
            sent.catch(() => undefined); // awaited below; must not go unhandled if numbering fails first
            emitting.push(sent);
          }
        }
        await finalizeCreditNotes(deps, creditNotes, report);
      });
      await phases.time("webhooks", () => Promise.all(emitting));
      const known = chainHeads(deps.invoices);
      for (const j of parts[p]!) {
        if (j.more === false) done.add(j.sub.key);
        if (j.head !== undefined && finalizedNow.has(j.id)) known.set(j.sub.key, j.head);
      }
    }
    // Phase times are sums: the next chunk's snapshot overlaps this chunk's rating and storing.
    deps.log.info(
      {
        round,
        invoices,
        credit_notes: creditNoteCount,
        ms: Math.round(performance.now() - roundStart),
        phases_ms: phases.ms,
      },
      opts.dryRun ? "close dry round" : "close round",
    );
  }
  return report;
}

/** Milliseconds spent per phase of a close round (summed over chunks), for its log line. */
class Phases {
  readonly ms: Record<string, number> = {};

  add(phase: string, ms: number): void {
    this.ms[phase] = Math.round((this.ms[phase] ?? 0) + ms);
  }

  async time<T>(phase: string, work: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await work();
    } finally {
      this.add(phase, performance.now() - t);
    }
  }
}

/** Finalizes credit notes in their own number series, after the invoices they were issued with. */
async function finalizeCreditNotes(deps: CloseDeps, notes: readonly Invoice[], report: CloseReport) {
  if (notes.length === 0) return;
  const prefix = creditNotePrefix(deps.settings.issuerPrefix);
  const finalized = await deps.invoices.finalize(
    notes.map((n) => n.id),
    prefix,
  );
  report.finalized.push(...finalized.map((f) => f.id));
  if (deps.webhooks !== undefined) await emitAll(deps.webhooks, finalized.map(invoiceFinalized));
}

/**
 * A subscription's finalized documents so far, found by following its chain: the first invoice's
 * service starts at the billing start, each next one where the previous one's ended. The chain,
 * not the current period layout, says what was billed, so a changed time zone never moves a
 * billed period (see README: time zone changes).
 */
interface History {
  /** Finalized period invoices, oldest first (the true-up candidates). */
  invoices: Invoice[];
  /** Per corrected invoice id: the usage it is billed at now (its latest true-up along the chain). */
  billed: Map<string, Record<string, string>[]>;
  /** Where the next invoice's service starts. */
  cursor: number;
}

/** The end of an invoice's service: the period end, or the subscription end inside it. */
function serviceEnd(inv: Invoice): number {
  return Date.parse(inv.rating.subscription_end ?? inv.period.end);
}

/** Adds a finalized document to the history; completes its credit note if a crash left it a draft. */
async function record(
  deps: CloseDeps,
  history: History,
  doc: Invoice,
  report: CloseReport,
  dryRun: boolean,
): Promise<void> {
  if (doc.kind !== "credit_note" && doc.rating.segments.length > 0) history.invoices.push(doc);
  for (const t of doc.true_ups)
    history.billed.set(
      t.invoice,
      t.usage.map((u) => ({ ...u })),
    );
  if (doc.credit_note !== undefined && !dryRun) {
    const cn = await deps.invoices.get(doc.credit_note);
    if (cn === null) throw new Error(`credit note ${doc.credit_note} of invoice ${doc.id} is missing`);
    if (cn.status === "draft") await finalizeCreditNotes(deps, [cn], report);
  }
}

/**
 * Follows the chain of finalized invoices from the billing start. Resolves with the history and
 * the first link not finalized yet (its id and stored draft, if any), or `next: null` when the
 * chain reached the subscription's end.
 */
async function followChain(
  deps: CloseDeps,
  sub: Subscription,
  rule: PeriodRule,
  report: CloseReport,
  dryRun: boolean,
): Promise<{ history: History; next: { id: string; draft: Invoice | null } | null }> {
  const history: History = { invoices: [], billed: new Map(), cursor: billingStart(sub) };
  for (;;) {
    if (rule.endMs !== undefined && history.cursor >= rule.endMs) return { history, next: null };
    const id = invoiceId(sub.key, iso(history.cursor));
    const inv = await deps.invoices.find(id);
    if (inv?.status !== "finalized") return { history, next: { id, draft: inv } };
    await record(deps, history, inv, report, dryRun);
    const end = serviceEnd(inv);
    if (!(end > history.cursor)) throw new Error(`invoice ${inv.id} does not advance the billing chain`);
    history.cursor = end;
  }
}

/**
 * Per invoice store (one per close process): where each subscription's chain of invoices ended
 * when it was last walked, and under which subscription, customer and plan versions.
 */
const headsByStore = new WeakMap<InvoiceStore, Map<string, ChainHead>>();

interface ChainHead {
  versions: string;
  cursor: number;
  index: number;
}

function chainHeads(store: InvoiceStore): Map<string, ChainHead> {
  let m = headsByStore.get(store);
  if (m === undefined) headsByStore.set(store, (m = new Map<string, ChainHead>()));
  return m;
}

/**
 * The period a stored draft bills: the one recorded when it was first built (a time zone change
 * since then does not move it), ending where the subscription now ends if that is earlier.
 */
function draftPeriod(draft: Invoice, rule: PeriodRule, index: number): BillingPeriodSlot {
  const start = Date.parse(draft.period.start);
  const end = Date.parse(draft.period.end);
  return {
    index,
    start,
    end,
    from: Date.parse(draft.rating.subscription_start),
    to: rule.endMs === undefined ? end : Math.min(end, rule.endMs),
  };
}

async function nextJob(
  deps: CloseDeps,
  sub: Versioned<Subscription>,
  nowMs: number,
  watermark: number,
  report: CloseReport,
  dryRun: boolean,
): Promise<Job | null> {
  const { catalog } = deps;
  const customer = catalog.customers.get(sub.customer);
  if (customer === undefined) throw new Error(`customer ${sub.customer} is not in the catalog`);
  const plan = catalog.plans.get(sub.plan);
  if (plan === undefined) throw new Error(`plan ${sub.plan} is not in the catalog`);
  const graceMs = plan.grace_period !== undefined ? parseDuration(plan.grace_period) : deps.settings.graceMs;
  const rule = periodRule(sub, customer, plan);
  // Where the chain ended when this process last walked it, under the same catalog versions (so
  // the same rule): invoices only add to a chain, so if the period after that point is not due,
  // the period after the real end is not either, and the walk (a read per past invoice) is saved.
  // (A chain that reached the subscription's end is always walked: true-up-only rounds follow.)
  const known = chainHeads(deps.invoices);
  const versions = `${sub.version}\u0000${customer.version}\u0000${plan.version}`;
  const head = known.get(sub.key);
  if (head !== undefined && head.versions === versions) {
    const after = periodFrom(rule, head.cursor, head.index);
    if (after.to > after.from && after.to > nowMs - graceMs) return null;
  }
  const { history, next } = await followChain(deps, sub, rule, report, dryRun);
  known.set(sub.key, { versions, cursor: history.cursor, index: history.invoices.length });
  if (next === null) {
    const at = { nowMs, graceMs, watermark };
    return adjustmentJob(deps, sub, customer, rule, history, at, report, dryRun);
  }
  const index = history.invoices.length;
  // A new period starts where the last invoice ended, laid out by the current rule; a draft
  // keeps the period it was first built for.
  const period =
    next.draft !== null ? draftPeriod(next.draft, rule, index) : periodFrom(rule, history.cursor, index);
  // Due when its service ends (the period's end, or the subscription's end inside it: a final
  // invoice goes out after the grace period, not at the end of the month) plus the grace period.
  if (period.to <= period.from || period.to > nowMs - graceMs) return null;
  // The cutoff is recorded with the first draft: re-running the close reads the same events.
  const cutoffMs = next.draft !== null ? Date.parse(next.draft.cutoff) : period.to + graceMs;
  if (watermark < cutoffMs) {
    report.waiting.push({ subscription: sub.key, period_start: iso(period.start), cutoff: iso(cutoffMs) });
    return null;
  }
  const planOf = (key: string) => catalog.plans.get(key);
  const ended = rule.endMs !== undefined && period.to >= rule.endMs;
  const following = ended ? null : periodFrom(rule, period.to, index + 1);
  return {
    sub,
    customer,
    period,
    id: next.id,
    cutoffMs,
    segments: segmentsOf(sub, period, planOf),
    earlier: await earlierOf(deps, history, cutoffMs),
    // An ended subscription may still owe a true-up-only round: looked at again.
    more: following === null || following.to <= nowMs - graceMs,
    head: { versions, cursor: period.to, index: index + 1 },
  };
}

/**
 * An ended subscription gets no next invoice to carry true-ups of late usage, so its late usage
 * is billed on a true-up-only invoice per round: the billing intervals after its last period,
 * laid out like its periods, while its invoices are inside the backfill horizon. Only the
 * latest due round is built (an earlier one's late usage is in it: reads are cut at each round's
 * cutoff), and nothing is stored when no late usage arrived, so most rounds leave no document.
 */
async function adjustmentJob(
  deps: CloseDeps,
  sub: Versioned<Subscription>,
  customer: Versioned<Customer>,
  rule: PeriodRule,
  history: History,
  { nowMs, graceMs, watermark }: { nowMs: number; graceMs: number; watermark: number },
  report: CloseReport,
  dryRun: boolean,
): Promise<Job | null> {
  const last = history.invoices.at(-1);
  if (last === undefined) return null;
  const horizonMs = deps.settings.backfillDays * DAY_MS;
  const open: PeriodRule = { ...rule };
  delete open.endMs;
  // The due rounds, computed without I/O. Late events older than the backfill horizon are refused
  // at ingest, so once the latest due round's cutoff is past the horizon of every invoice nothing
  // can come any more: a subscription ended long ago costs no read.
  const lastEnd = Date.parse(last.period.end);
  const latestEnd = boundary(open, boundaryIndexAt(open, nowMs - graceMs));
  if (!(lastEnd > latestEnd + graceMs - horizonMs)) return null;
  const rounds: BillingPeriodSlot[] = [];
  for (let from = lastEnd; rounds.length < 10_000;) {
    const round = periodFrom(open, from, history.invoices.length + rounds.length);
    if (round.end > nowMs - graceMs) break;
    rounds.push(round);
    from = round.end;
  }
  const latest = rounds.at(-1);
  if (latest === undefined || !(lastEnd > latest.end + graceMs - horizonMs)) return null;
  for (const round of rounds) {
    const id = adjustmentId(sub.key, iso(round.from));
    const inv = await deps.invoices.find(id);
    const cn = inv === null ? await deps.invoices.find(creditNoteId(id)) : null;
    const stored = inv ?? cn;
    if (stored?.status === "finalized") {
      await record(deps, history, stored, report, dryRun);
      continue;
    }
    // Only the latest due round is built (or one a crash left a draft of).
    if (stored === null && round !== latest) continue;
    const cutoffMs = stored !== null ? Date.parse(stored.cutoff) : round.end + graceMs;
    if (watermark < cutoffMs) return null;
    return {
      sub,
      customer,
      period: round,
      id,
      cutoffMs,
      segments: [],
      earlier: await earlierOf(deps, history, cutoffMs),
    };
  }
  return null;
}

/**
 * The finalized invoices of `history` still inside the backfill horizon of `cutoffMs`, newest
 * first, each with the usage billed for it so far: its own record, or the most recent true-up
 * of it on a later document. True-ups of these travel on the next invoice.
 */
async function earlierOf(deps: CloseDeps, history: History, cutoffMs: number): Promise<Earlier[]> {
  const horizon = cutoffMs - deps.settings.backfillDays * DAY_MS;
  const earlier: Earlier[] = [];
  for (let j = history.invoices.length - 1; j >= 0; j--) {
    const inv = history.invoices[j]!;
    if (!(Date.parse(inv.period.end) > horizon)) break;
    earlier.push({
      invoice: inv,
      segments: await Promise.all(
        inv.rating.segments.map(async (s) => ({
          plan: await planVersion(deps.catalog, s.plan, s.plan_version),
          from: Date.parse(s.from),
          to: Date.parse(s.to),
        })),
      ),
      billedUsage: history.billed.get(inv.id) ?? inv.rating.segments.map((s) => ({ ...s.usage })),
    });
  }
  return earlier;
}

/**
 * The invoice a subscription's current period would get if it closed now (not stored): its usage
 * so far through the same query path and rating as the close, plus the true-ups of late usage
 * the next invoice will carry (net: a negative one is shown here, where the close may issue it
 * as a credit note). `null` when the subscription is not active at `nowMs`.
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
  const report: CloseReport = { finalized: [], drafts: [], waiting: [], errors: [] };
  const { history } = await followChain(deps, sub, rule, report, true);
  const at = periodAt(rule, nowMs);
  if (at === null || nowMs < billingStart(sub)) return null;
  // Billed from where the last invoice ended when that is inside the current period.
  const period = { ...at, from: Math.min(Math.max(at.from, history.cursor), at.to) };
  if (period.from >= period.to) return null;
  const job: Job = {
    sub,
    customer,
    period,
    id: invoiceId(sub.key, iso(period.from)),
    cutoffMs: nowMs,
    segments: segmentsOf(sub, period, (key) => catalog.plans.get(key)),
    earlier: await earlierOf(deps, history, nowMs),
  };
  const [draft] = (await buildDrafts(deps, [job], report, { net: true })).drafts;
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

/**
 * Snapshots every quantity of the round in one call, then builds each draft: invoices, and the
 * credit notes that carry negative true-ups an invoice cannot absorb (unless `net`, for previews).
 */
async function buildDrafts(
  deps: CloseDeps,
  jobs: Job[],
  report: CloseReport,
  opts: { net?: boolean } = {},
  phases?: Phases,
): Promise<{ drafts: Invoice[]; creditNotes: Invoice[] }> {
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
  const snaps =
    phases === undefined
      ? await deps.snapshots.snapshot(requests)
      : await phases.time("snapshot", () => deps.snapshots.snapshot(requests));
  const usageOf = (indexes: Map<string, number>[]): SegmentUsage[] =>
    indexes.map((m) => new Map([...m].map(([k, i]) => [k, snaps[i]!])));

  const drafts: Invoice[] = [];
  const creditNotes: Invoice[] = [];
  const now = new Date().toISOString();
  for (const p of plan) {
    if (p === null) continue;
    const { job } = p;
    try {
      const usage = usageOf(p.current);
      const rec = ratingRecord(job.sub, job.period, job.segments, usage);
      const plans = (key: string, version: number) => planAt(deps.catalog, key, version);
      // A true-up-only round of an ended subscription has no segments and no lines of its own.
      const rated = job.segments.length > 0 ? rateRecord(rec, plans, job.sub.started_at) : null;
      const currency = rated?.currency ?? job.earlier[0]?.invoice.currency;
      const exponent = rated?.currency_exponent ?? job.earlier[0]?.invoice.currency_exponent;
      if (currency === undefined || exponent === undefined) continue;
      if (rated !== null && currency.toUpperCase() !== job.customer.currency.toUpperCase()) {
        throw new Error(
          `plan bills in ${currency} but customer ${job.customer.key} is invoiced in ${job.customer.currency.toUpperCase()}`,
        );
      }
      const lines: InvoiceLine[] = rated !== null ? numberLines(rated.lines, job.segments, usage) : [];
      const trueUps: Invoice["true_ups"][number][] = [];
      let subtotal = rated?.subtotal ?? 0;
      let total = rated?.total ?? 0;
      job.earlier.forEach((e, i) => {
        const nowUsage = usageOf(p.earlier[i]!);
        const nowQuantities = nowUsage.map((m) =>
          Object.fromEntries([...m].map(([k, s]) => [k, s.quantity])),
        );
        if (sameUsage(nowQuantities, e.billedUsage)) return;
        if (e.invoice.currency !== currency) {
          // One document, one currency: the customer's currency changed since that invoice.
          throw new Error(
            `late usage of invoice ${e.invoice.id} (${e.invoice.currency}) cannot be billed on a ${currency} invoice: the currency changed since`,
          );
        }
        const before = rateRecord(e.invoice.rating, plans, job.sub.started_at, e.billedUsage);
        const after = rateRecord(e.invoice.rating, plans, job.sub.started_at, nowQuantities);
        const extra = trueUpLines(before, after, e.invoice, nowUsage, e.segments, lines.length + 1);
        lines.push(...extra);
        const delta = extra.reduce((s, l) => s + l.amount, 0);
        subtotal += delta;
        total += delta;
        trueUps.push({ invoice: e.invoice.id, usage: nowQuantities });
      });
      // An ended subscription's round without late usage issues nothing.
      if (rated === null && trueUps.length === 0) continue;
      const draft: Invoice = {
        id: job.id,
        kind: "invoice",
        status: "draft",
        number: null,
        issuer_prefix: deps.settings.issuerPrefix,
        customer: job.customer.key,
        customer_version: job.customer.version,
        subscription: job.sub.key,
        subscription_version: job.sub.version,
        plans: uniquePlans(rec),
        currency,
        currency_exponent: exponent,
        period: rated?.period ?? rec.period,
        cutoff: iso(job.cutoffMs),
        lines,
        rating: rec,
        true_ups: trueUps,
        subtotal,
        total,
        created_at: now,
        finalized_at: null,
      };
      if (total >= 0 || opts.net === true) {
        drafts.push(draft);
        continue;
      }
      const { invoice, creditNote } = splitCredits(draft, deps.settings.issuerPrefix, rated !== null);
      creditNotes.push(creditNote);
      if (invoice !== null) drafts.push(invoice);
    } catch (err: unknown) {
      report.errors.push({ subscription: job.sub.key, message: (err as Error).message });
      deps.log.error({ err, subscription: job.sub.key }, "cannot build invoice");
    }
  }
  return { drafts, creditNotes };
}

/**
 * A draft whose true-ups would take its total below zero (a cap reached again, a `latest` meter
 * lower, a tier dropped): its negative true-up lines move to a credit note, numbered in the
 * issuer's `-CN` series; the invoice keeps its own lines and the positive true-ups (total ≥ 0,
 * as rating guarantees for its own lines). A round whose only lines were negative issues the
 * credit note alone. Both carry the round's true-up record, so the next true-up of those periods
 * starts from what was billed and credited.
 */
function splitCredits(
  draft: Invoice,
  issuerPrefix: string,
  /** A period's invoice is issued even with no line left: the next period's chain starts from it. */
  keepInvoice: boolean,
): { invoice: Invoice | null; creditNote: Invoice } {
  const credited = (l: InvoiceLine) => l.true_up !== undefined && l.amount < 0;
  const renumber = (lines: readonly InvoiceLine[]) => lines.map((l, i) => ({ ...l, number: i + 1 }));
  const kept = renumber(draft.lines.filter((l) => !credited(l)));
  const moved = renumber(draft.lines.filter(credited));
  const credit = moved.reduce((s, l) => s + l.amount, 0);
  const cnId = creditNoteId(draft.id);
  const invoice: Invoice | null =
    kept.length === 0 && !keepInvoice
      ? null
      : {
          ...draft,
          lines: kept,
          subtotal: draft.subtotal - credit,
          total: draft.total - credit,
          credit_note: cnId,
        };
  const creditNote: Invoice = {
    ...draft,
    id: cnId,
    kind: "credit_note",
    issuer_prefix: creditNotePrefix(issuerPrefix),
    lines: moved,
    rating: { ...draft.rating, segments: [] },
    plans: [],
    subtotal: credit,
    total: credit,
    credits: [...new Set(moved.map((l) => l.true_up!.invoice))],
    issued_with: invoice === null ? null : invoice.id,
  };
  return { invoice, creditNote };
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
