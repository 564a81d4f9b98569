import type { Subscription, Versioned } from "../catalog/index.js";
import {
  compilePlan,
  rate,
  type CompiledPlan,
  type PlanLike,
  type LineItem,
  type Plan,
  type RatedInvoice,
  type RatingInput,
  type SubscriptionChange,
} from "../rating/index.js";
import type { Invoice, InvoiceLine, UsageSnapshot } from "./invoice.js";
import type { BillingPeriodSlot } from "./periods.js";

/*
 * Pure: from a subscription period, the catalog versions in effect and the usage snapshots, to
 * the rating input and the invoice lines. No clock, no I/O (the close does those), so the same
 * inputs always give the same invoice (invariant 8) and tests need no servers.
 */

/** A part of the period billed under one plan (plan changes split a period into segments). */
export interface Segment {
  plan: Versioned<Plan>;
  from: number;
  to: number;
}

/** The segments of a period: the subscription's plan, then each phase from its `at`. */
export function segmentsOf(
  sub: Subscription,
  period: BillingPeriodSlot,
  planOf: (key: string) => Versioned<Plan> | undefined,
): Segment[] {
  const steps: { at: number; plan: string }[] = [
    { at: Date.parse(sub.started_at), plan: sub.plan },
    ...sub.phases.map((p) => ({ at: Date.parse(p.at), plan: p.plan })),
  ];
  const out: Segment[] = [];
  for (let i = 0; i < steps.length; i++) {
    const from = Math.max(steps[i]!.at, period.from);
    const to = Math.min(steps[i + 1]?.at ?? Infinity, period.to);
    if (to <= from) continue;
    const plan = planOf(steps[i]!.plan);
    if (plan === undefined)
      throw new Error(`subscription ${sub.key}: plan ${steps[i]!.plan} is not in the catalog`);
    out.push({ plan, from, to });
  }
  return out;
}

/** Meters whose quantity a segment needs: its plan's metered prices (and the seat meter). */
export function metersOf(seg: Segment, sub: Subscription): string[] {
  const keys = new Set<string>();
  for (const p of seg.plan.prices) if (p.type === "metered" && p.meter !== undefined) keys.add(p.meter);
  if (sub.seats?.meter !== undefined) keys.add(sub.seats.meter);
  return [...keys];
}

/** Usage snapshots of one segment, by meter key. */
export type SegmentUsage = ReadonlyMap<string, UsageSnapshot>;

/** How a period was rated, stored on the invoice so a later true-up can rate it again exactly. */
export interface RatingRecord {
  period: { start: string; end: string };
  subscription_start: string;
  subscription_end?: string;
  segments: {
    plan: string;
    plan_version: number;
    from: string;
    to: string;
    /** Quantities billed for this segment, by meter key. */
    usage: Record<string, string>;
  }[];
  /** Seat count at the period start, and seat changes inside it. */
  seats?: string;
  seat_changes: { at: string; seats: string }[];
  /** Subscription discounts added to the plans' own. */
  discounts: Subscription["discounts"];
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * The rating record of a period. Seats come from the subscription's count or schedule (the count
 * in effect at each instant) or from its seat meter (the segment's quantity, e.g. `peak` seats).
 */
export function ratingRecord(
  sub: Subscription,
  period: BillingPeriodSlot,
  segments: readonly Segment[],
  usage: readonly SegmentUsage[],
): RatingRecord {
  let seats: string | undefined;
  const seatChanges: { at: string; seats: string }[] = [];
  if (sub.seats?.meter !== undefined) {
    const meter = sub.seats.meter;
    seats = usage[0]?.get(meter)?.quantity ?? "0";
    segments.slice(1).forEach((seg, i) => {
      seatChanges.push({ at: iso(seg.from), seats: usage[i + 1]?.get(meter)?.quantity ?? "0" });
    });
  } else if (sub.seats !== undefined) {
    // The count in effect at the period's start, then every scheduled change inside it.
    seats = sub.seats.quantity;
    for (const s of sub.seats.schedule) {
      const at = Date.parse(s.at);
      if (at <= period.from) seats = s.quantity;
      else if (at < period.to) seatChanges.push({ at: iso(at), seats: s.quantity });
    }
    seats ??= "0";
  }
  return {
    period: { start: iso(period.start), end: iso(period.end) },
    subscription_start: iso(period.from),
    ...(period.to < period.end ? { subscription_end: iso(period.to) } : {}),
    segments: segments.map((seg, i) => ({
      plan: seg.plan.key,
      plan_version: seg.plan.version,
      from: iso(seg.from),
      to: iso(seg.to),
      usage: Object.fromEntries(
        [...(usage[i] ?? new Map<string, UsageSnapshot>())].map(([k, s]) => [k, s.quantity]),
      ),
    })),
    ...(seats !== undefined ? { seats } : {}),
    seat_changes: seatChanges,
    discounts: sub.discounts,
  };
}

/**
 * Rates a period from its record. `plans(key, version)` returns the exact plan versions used;
 * `usageOverride` replaces the quantities (a true-up rates the period again with late usage).
 */
export function rateRecord(
  rec: RatingRecord,
  plans: (key: string, version: number) => Plan | Versioned<Plan>,
  subscriptionStartedAt: string,
  usageOverride?: readonly Record<string, string>[],
): RatedInvoice {
  const withDiscounts = (p: Plan | Versioned<Plan>): PlanLike => {
    if (rec.discounts.length > 0) {
      return { ...planDefinition(p), discounts: [...(p.discounts ?? []), ...rec.discounts] };
    }
    let compiled = compiledPlans.get(p);
    if (compiled === undefined) compiledPlans.set(p, (compiled = compilePlan(planDefinition(p))));
    return compiled;
  };
  const [first, ...rest] = rec.segments;
  if (first === undefined) throw new Error("a rating record needs at least one segment");
  const usageOf = (i: number) => usageOverride?.[i] ?? rec.segments[i]!.usage;
  const changes: SubscriptionChange[] = [
    ...rest.map((seg, i): SubscriptionChange => ({
      type: "plan",
      at: seg.from,
      plan: withDiscounts(plans(seg.plan, seg.plan_version)),
      usage: usageOf(i + 1),
    })),
    ...rec.seat_changes.map((c): SubscriptionChange => ({ type: "seats", at: c.at, seats: c.seats })),
  ].sort((a, b) => Date.parse(String(a.at)) - Date.parse(String(b.at)));
  const input: RatingInput = {
    period: rec.period,
    plan: withDiscounts(plans(first.plan, first.plan_version)),
    usage: usageOf(0),
    changes,
    // The real start anchors discount durations; a start inside the period prorates fees.
    subscriptionStart: subscriptionStartedAt,
    // Where this invoice's service starts (a time zone change or billing_starts_at can put it
    // after both): fees are prorated from it. Records stored before it equal max(start, started_at).
    billedFrom: rec.subscription_start,
    ...(rec.seats !== undefined ? { seats: rec.seats } : {}),
    ...(rec.subscription_end !== undefined ? { subscriptionEnd: rec.subscription_end } : {}),
  };
  return rate(input);
}

/** Plans compiled once per stored plan object (the close rates thousands of periods per plan). */
const compiledPlans = new WeakMap<Plan, CompiledPlan>();

/** A plan without the catalog's `version` and `applied_at`. */
function planDefinition(p: Plan | Versioned<Plan>): Plan {
  const { version: _v, applied_at: _a, ...def } = p as Versioned<Plan>;
  return def;
}

/** Rated lines numbered from `first`, usage lines carrying the snapshot of their segment's meter. */
export function numberLines(
  lines: readonly LineItem[],
  segments: readonly Pick<Segment, "from" | "to">[],
  usage: readonly SegmentUsage[],
  first = 1,
): InvoiceLine[] {
  return lines.map((line, i) => {
    let snapshot: UsageSnapshot | undefined;
    if (line.kind === "usage" && line.meter !== null) {
      const start = Date.parse(line.period.start);
      const seg = segments.findIndex((s) => s.from <= start && start < s.to);
      snapshot = usage[seg]?.get(line.meter);
    }
    return { ...line, number: first + i, ...(snapshot ? { snapshot } : {}) };
  });
}

/** A line's identity across two ratings of one period: what it bills, under which plan, for when. */
function lineKey(l: LineItem): string {
  return `${l.kind}\u0000${l.plan}\u0000${l.price ?? ""}\u0000${l.discount?.key ?? ""}\u0000${l.period.start}`;
}

/**
 * True-up lines for one earlier invoice: the period rated with all usage known now, minus the
 * period as billed so far (its own lines plus earlier true-ups), line by line, so tiers, included
 * quantities, caps, commitments and discounts all come out as if the late usage had been on time.
 * Lines keep the original service period. Empty when nothing changed.
 */
export function trueUpLines(
  billedSoFar: RatedInvoice,
  now: RatedInvoice,
  original: Pick<Invoice, "id">,
  nowUsage: readonly SegmentUsage[],
  segments: readonly Pick<Segment, "from" | "to">[],
  first: number,
): InvoiceLine[] {
  const before = new Map(billedSoFar.lines.map((l) => [lineKey(l), l]));
  const after = new Map(now.lines.map((l) => [lineKey(l), l]));
  const out: InvoiceLine[] = [];
  const push = (line: LineItem, was: LineItem | undefined, amount: number) => {
    const [numbered] = numberLines([line], segments, nowUsage, first + out.length);
    out.push({
      ...numbered!,
      description: `${line.description} (true-up: usage received after the period closed)`,
      amount,
      true_up: {
        invoice: original.id,
        billed_quantity: was?.quantity ?? "0",
        billed_amount: was?.amount ?? 0,
      },
    });
  };
  for (const [key, line] of after) {
    const was = before.get(key);
    const diff = line.amount - (was?.amount ?? 0);
    if (diff !== 0 || (was !== undefined && was.quantity !== line.quantity)) push(line, was, diff);
  }
  // A line the late usage made disappear (a cap no longer reached): take its amount back.
  for (const [key, was] of before) {
    if (!after.has(key) && was.amount !== 0) push({ ...was, quantity: "0" }, was, -was.amount);
  }
  return out;
}
