import { DateTime } from "luxon";
import type { Interval } from "../rating/index.js";

/** How a subscription's billing periods are laid out. */
export interface PeriodRule {
  interval: Interval;
  intervalCount: number;
  /** IANA zone of the customer: boundaries keep their local wall time across DST changes. */
  timezone: string;
  /** Epoch ms of one boundary (the billing anchor). */
  anchorMs: number;
  /** The subscription's life `[startMs, endMs)`. */
  startMs: number;
  endMs?: number;
}

/** One billing period of a subscription. */
export interface BillingPeriodSlot {
  /** 0 for the period holding `started_at`, counting up. */
  index: number;
  /** The whole interval `[start, end)` (what proration divides by). */
  start: number;
  end: number;
  /** The part of it the subscription was active: `[from, to)` within `[start, end)`. */
  from: number;
  to: number;
}

/**
 * The boundary `k` intervals from the anchor (k may be negative), computed from the anchor each
 * time rather than stepwise, so an anchor on the 31st gives Feb 28 and then Mar 31 again, and a
 * local midnight stays local midnight on both sides of a DST change (a calendar month in Berlin
 * starts at 23:00 or 22:00 UTC). A local time that does not exist (a spring-forward gap) moves
 * forward by the gap, as luxon resolves it.
 */
export function boundary(rule: PeriodRule, k: number): number {
  const anchor = DateTime.fromMillis(rule.anchorMs, { zone: rule.timezone });
  const n = k * rule.intervalCount;
  switch (rule.interval) {
    case "day":
      return anchor.plus({ days: n }).toMillis();
    case "week":
      return anchor.plus({ weeks: n }).toMillis();
    case "month":
      return anchor.plus({ months: n }).toMillis();
    case "year":
      return anchor.plus({ years: n }).toMillis();
  }
}

/** Rough interval length, only to start the search for the boundary below an instant. */
const approxMs: Record<Interval, number> = {
  day: 86_400_000,
  week: 7 * 86_400_000,
  month: 30.436875 * 86_400_000,
  year: 365.2425 * 86_400_000,
};

/** The k with `boundary(k) <= t < boundary(k + 1)`. */
export function boundaryIndexAt(rule: PeriodRule, t: number): number {
  let k = Math.floor((t - rule.anchorMs) / (approxMs[rule.interval] * rule.intervalCount));
  while (boundary(rule, k) > t) k--;
  while (boundary(rule, k + 1) <= t) k++;
  return k;
}

/**
 * Billing periods of a subscription whose whole interval ended at or before `untilMs`
 * (the close bills a period once its end has passed), oldest first, starting with the period
 * that holds `startMs`. The first and last may be partial (`from > start`, `to < end`).
 */
export function endedPeriods(rule: PeriodRule, untilMs: number): BillingPeriodSlot[] {
  const out: BillingPeriodSlot[] = [];
  const k0 = boundaryIndexAt(rule, rule.startMs);
  for (let k = k0; ; k++) {
    const start = boundary(rule, k);
    const end = boundary(rule, k + 1);
    if (rule.endMs !== undefined && start >= rule.endMs) break;
    const to = rule.endMs === undefined ? end : Math.min(end, rule.endMs);
    // A subscription that ended mid-period is billed once that period is over, like any other.
    if (end > untilMs) break;
    out.push({ index: k - k0, start, end, from: Math.max(start, rule.startMs), to });
  }
  return out;
}

/** The period holding instant `t` (the current period, for upcoming invoices), or null outside the subscription. */
export function periodAt(rule: PeriodRule, t: number): BillingPeriodSlot | null {
  if (t < rule.startMs || (rule.endMs !== undefined && t >= rule.endMs)) return null;
  const k0 = boundaryIndexAt(rule, rule.startMs);
  const k = boundaryIndexAt(rule, t);
  const start = boundary(rule, k);
  const end = boundary(rule, k + 1);
  return {
    index: k - k0,
    start,
    end,
    from: Math.max(start, rule.startMs),
    to: rule.endMs === undefined ? end : Math.min(end, rule.endMs),
  };
}

/**
 * The period billed from `fromMs` on: the interval of the current rule holding `fromMs`, billed
 * from `fromMs` (where the previous invoice ended, or where billing starts) to its end or the
 * subscription's end. When the rule's boundaries moved since the previous invoice (the customer's
 * time zone changed), this is the shorter, prorated period that joins the old boundaries to the
 * new ones: no gap, no overlap.
 */
export function periodFrom(rule: PeriodRule, fromMs: number, index: number): BillingPeriodSlot {
  const k = boundaryIndexAt(rule, fromMs);
  const start = boundary(rule, k);
  const end = boundary(rule, k + 1);
  return {
    index,
    start,
    end,
    from: fromMs,
    to: rule.endMs === undefined ? end : Math.min(end, rule.endMs),
  };
}
