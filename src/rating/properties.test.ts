import { describe, it, expect } from "vitest";
import fc from "fast-check";
import Big from "big.js";
import type { PlanInput } from "./plan-schema.js";
import { compilePlan, priceFixed, priceQuantity } from "./pricing.js";
import { dec, fmt } from "./decimal.js";
import { fmtFixed, parseFixed } from "./fixed.js";
import { rate } from "./rate.js";
import type { RatingInput, SubscriptionChange } from "./rate.js";
import type { LineItem } from "./types.js";

/*
 * Property tests for the rating invariants. Magnitudes are chosen so that every amount stays a safe
 * integer (quantities < 10^8, unit amounts < 10^5 minor units); the overflow guard has its own test.
 */

const NOV = { start: "2026-11-01T00:00:00Z", end: "2026-12-01T00:00:00Z" } as const;
const NOV_START = Date.parse(NOV.start);
const NOV_MS = Date.parse(NOV.end) - NOV_START;

/** A non-negative decimal string below `10^intDigits` with up to `scale` fractional digits. */
function decimal(maxInt: bigint, scale: number): fc.Arbitrary<string> {
  return fc.tuple(fc.bigInt({ min: 0n, max: maxInt }), fc.integer({ min: 0, max: scale })).map(([n, s]) => {
    if (s === 0) return n.toString();
    const digits = n.toString().padStart(s + 1, "0");
    return `${digits.slice(0, -s)}.${digits.slice(-s)}`;
  });
}

const quantity = decimal(99_999_999n, 4).map((s) => (Big(s).gt(99_999_999) ? "99999999" : s));
const unitAmount = decimal(9_999_999n, 6).map((s) => (Big(s).gt(99_999) ? "99999" : s));
const flatAmount = fc.integer({ min: 0, max: 1_000_000 });

/** 1–5 tiers with strictly ascending bounds, the last one `inf`. */
const tiers = fc
  .uniqueArray(fc.integer({ min: 1, max: 50_000_000 }), { minLength: 0, maxLength: 4 })
  .chain((bounds) => {
    const sorted = [...bounds].sort((a, b) => a - b);
    return fc.tuple(
      ...[...sorted.map(String), "inf"].map((upTo) =>
        fc.record({ up_to: fc.constant(upTo), unit_amount_decimal: unitAmount, flat_amount: flatAmount }),
      ),
    );
  });

function meteredPlan(price: Record<string, unknown>): PlanInput {
  return {
    key: "p",
    currency: "usd",
    prices: [{ key: "x", type: "metered", meter: "m", ...price }],
  };
}

function lineAmount(plan: PlanInput | ReturnType<typeof compilePlan>, q: string): number {
  return rate({ plan, period: NOV, usage: { m: q } }).lines[0]!.amount;
}

describe("invariants (fast-check)", () => {
  it("graduated totals never decrease as quantity grows", () => {
    fc.assert(
      fc.property(tiers, quantity, quantity, (ts, a, b) => {
        const plan = compilePlan(
          meteredPlan({ billing_scheme: "tiered", tiers_mode: "graduated", tiers: ts }),
        );
        const [lo, hi] = Big(a).lte(Big(b)) ? [a, b] : [b, a];
        const price = plan.prices[0]!;
        expect(priceQuantity(price, dec(lo)).amount.lte(priceQuantity(price, dec(hi)).amount)).toBe(true);
        expect(lineAmount(plan, lo)).toBeLessThanOrEqual(lineAmount(plan, hi));
      }),
    );
  });

  it("volume and graduated agree on a single tier", () => {
    fc.assert(
      fc.property(unitAmount, flatAmount, quantity, (unit, flat, q) => {
        const tier = [{ up_to: "inf", unit_amount_decimal: unit, flat_amount: flat }];
        const graduated = rate({
          plan: meteredPlan({ billing_scheme: "tiered", tiers_mode: "graduated", tiers: tier }),
          period: NOV,
          usage: { m: q },
        }).lines[0]!;
        const volume = rate({
          plan: meteredPlan({ billing_scheme: "tiered", tiers_mode: "volume", tiers: tier }),
          period: NOV,
          usage: { m: q },
        }).lines[0]!;
        expect(graduated.amount).toBe(volume.amount);
        expect(graduated.tiers).toEqual(volume.tiers);
      }),
    );
  });

  it("a price with transform_quantity charges whole packages", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.constantFrom("up" as const, "down" as const),
        fc.integer({ min: 0, max: 100_000 }),
        quantity,
        (divideBy, round, unit, q) => {
          const line = rate({
            plan: meteredPlan({ unit_amount: unit, transform_quantity: { divide_by: divideBy, round } }),
            period: NOV,
            usage: { m: q },
          }).lines[0]!;
          const packages = Big(line.packages!);
          const d = Big(divideBy);
          expect(packages.eq(packages.round(0, Big.roundDown))).toBe(true);
          if (round === "up") {
            expect(packages.times(d).gte(q) && packages.minus(1).times(d).lt(q)).toBe(true);
          } else {
            expect(packages.times(d).lte(q) && packages.plus(1).times(d).gt(q)).toBe(true);
          }
          expect(line.amount).toBe(Number(packages.times(unit).toFixed(0)));
        },
      ),
    );
  });

  it("rounds once per line: a tiered line is the half-up rounding of its exact tier sum", () => {
    fc.assert(
      fc.property(tiers, fc.constantFrom("graduated", "volume"), quantity, (ts, mode, q) => {
        const line = rate({
          plan: meteredPlan({ billing_scheme: "tiered", tiers_mode: mode, tiers: ts }),
          period: NOV,
          usage: { m: q },
        }).lines[0]!;
        const exact = line.tiers!.reduce((s, t) => s.plus(t.amount_decimal), Big(0));
        expect(line.amount).toBe(Number(exact.round(0, Big.roundHalfUp).toFixed(0)));
      }),
    );
  });

  it("splitting a fee at a change moves the total by at most one minor unit per extra line", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10_000_000 }),
        fc.integer({ min: 1, max: NOV_MS - 1 }),
        (fee, offset) => {
          const plan: PlanInput = {
            key: "f",
            currency: "usd",
            prices: [{ key: "fee", type: "flat", unit_amount: fee }],
          };
          const at = new Date(NOV_START + offset).toISOString();
          const split = rate({ plan, period: NOV, changes: [{ type: "plan", at, plan }] });
          expect(split.lines).toHaveLength(2);
          expect(Math.abs(split.total - fee)).toBeLessThanOrEqual(1);
        },
      ),
    );
  });

  it("total = sum of lines, subtotal excludes only plan-wide discounts, and nothing is negative overall", () => {
    const discount = fc.record(
      {
        percent_off: fc.option(
          decimal(10_000n, 2).map((s) => (Big(s).gt(100) || Big(s).eq(0) ? "50" : s)),
          {
            nil: undefined,
          },
        ),
        amount_off: fc.integer({ min: 1, max: 200_000 }),
        duration: fc.constantFrom("once", "forever", "repeating"),
        applies: fc.constantFrom(null, "fee", "seats", "usage"),
      },
      { requiredKeys: ["amount_off", "duration", "applies"] },
    );
    const scenario = fc.record({
      fee: flatAmount,
      seatUnit: unitAmount,
      usageTiers: tiers,
      commitment: fc.option(fc.integer({ min: 1, max: 5_000_000 }), { nil: undefined }),
      cap: fc.option(fc.integer({ min: 0, max: 5_000_000 }), { nil: undefined }),
      discounts: fc.array(discount, { maxLength: 4 }),
      seats: fc.integer({ min: 0, max: 500 }),
      seatChanges: fc.array(
        fc.tuple(fc.integer({ min: 1, max: NOV_MS - 1 }), fc.integer({ min: 0, max: 500 })),
        {
          maxLength: 3,
        },
      ),
      subscriptionStartOffset: fc.integer({ min: -NOV_MS * 3, max: NOV_MS - 1 }),
      usage: quantity,
    });
    fc.assert(
      fc.property(scenario, (s) => {
        const plan: PlanInput = {
          key: "prop",
          currency: "usd",
          prices: [
            { key: "fee", type: "flat", unit_amount: s.fee },
            { key: "seats", type: "seat", unit_amount_decimal: s.seatUnit },
            {
              key: "usage",
              type: "metered",
              meter: "m",
              billing_scheme: "tiered",
              tiers_mode: "graduated",
              tiers: s.usageTiers,
            },
          ],
          ...(s.commitment === undefined ? {} : { minimum_commitment: { amount: s.commitment } }),
          ...(s.cap === undefined ? {} : { spend_cap: { amount: s.cap } }),
          discounts: s.discounts.map((d, i) => ({
            key: `d${i}`,
            ...(d.percent_off === undefined ? { amount_off: d.amount_off } : { percent_off: d.percent_off }),
            duration: d.duration,
            ...(d.duration === "repeating" ? { duration_in_periods: 2 } : {}),
            ...(d.applies === null ? {} : { applies_to: { price: d.applies } }),
          })),
        };
        const subscriptionStart = NOV_START + s.subscriptionStartOffset;
        const changes: SubscriptionChange[] = s.seatChanges
          .filter(([offset]) => NOV_START + offset > subscriptionStart)
          .sort((a, b) => a[0] - b[0])
          .filter((c, i, all) => i === 0 || c[0] !== all[i - 1]![0])
          .map(([offset, seats]) => ({
            type: "seats",
            at: new Date(NOV_START + offset).toISOString(),
            seats,
          }));
        const input: RatingInput = {
          plan,
          period: NOV,
          seats: s.seats,
          usage: { m: s.usage },
          changes,
          subscriptionStart: new Date(subscriptionStart).toISOString(),
        };
        const invoice = rate(input);
        const total = invoice.lines.reduce((sum, l: LineItem) => sum + l.amount, 0);
        const planDiscounts = invoice.lines
          .filter((l) => l.kind === "discount" && l.discount?.scope === "plan")
          .reduce((sum, l) => sum + l.amount, 0);
        expect(invoice.total).toBe(total);
        expect(invoice.subtotal).toBe(total - planDiscounts);
        expect(invoice.total).toBeGreaterThanOrEqual(0);
        for (const line of invoice.lines) {
          expect(Number.isSafeInteger(line.amount)).toBe(true);
          if (line.kind === "discount" || line.kind === "spend_cap")
            expect(line.amount).toBeLessThanOrEqual(0);
          else expect(line.amount).toBeGreaterThanOrEqual(0);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("the fixed-point fast path (fixed.ts) agrees with big.js", () => {
  /** Amounts and quantities, some with more digits than fixed point takes or large enough to overflow it. */
  const amount = fc.oneof(
    { arbitrary: unitAmount, weight: 4 },
    { arbitrary: decimal(99_999_999_999_999_999n, 12), weight: 1 },
  );
  const anyQuantity = fc.oneof(
    { arbitrary: quantity, weight: 4 },
    { arbitrary: decimal(999_999_999_999_999_999n, 6), weight: 1 },
  );
  const meteredPrice = fc
    .oneof(
      fc.record({ unit_amount_decimal: amount }),
      fc.record({
        unit_amount_decimal: amount,
        transform_quantity: fc.record({
          divide_by: fc.integer({ min: 1, max: 1_000_000 }),
          round: fc.constantFrom("up", "down"),
        }),
      }),
      fc.record({
        billing_scheme: fc.constant("tiered"),
        tiers_mode: fc.constantFrom("graduated", "volume"),
        tiers,
      }),
    )
    .chain((p) =>
      fc
        .option(anyQuantity, { nil: undefined })
        .map((included) => (included === undefined ? p : { ...p, included_quantity: included })),
    );

  it("priceFixed returns priceQuantity's amount, tiers and packages, or declines", () => {
    let fast = 0;
    fc.assert(
      fc.property(meteredPrice, anyQuantity, (p, q) => {
        const price = compilePlan(meteredPlan(p)).prices[0]!;
        const fixed = parseFixed(q);
        if (fixed === undefined) return;
        const text = fmt(dec(q));
        const priced = priceFixed(price, fixed, text);
        if (priced === undefined) return;
        fast++;
        const reference = priceQuantity(price, dec(q), text);
        expect(fmtFixed(priced.amount)).toBe(fmt(reference.amount));
        expect(priced.tiers).toEqual(reference.tiers);
        expect(priced.packages === undefined ? undefined : String(priced.packages)).toBe(
          reference.packages === undefined ? undefined : fmt(reference.packages),
        );
      }),
      { numRuns: 1000 },
    );
    // Most cases fit in fixed point: the comparison above really ran.
    expect(fast).toBeGreaterThan(300);
  });

  /**
   * The same quantity written so that rating parses it with big.js instead: a bigint for an integer,
   * else the decimal padded with trailing zeros beyond the 15 significant digits fixed point takes
   * (fixed.test.ts checks that parseFixed refuses those). Its canonical text is the same.
   */
  function viaBigJs(q: string): string | bigint {
    return q.includes(".") ? `${q}${"0".repeat(16)}` : BigInt(q);
  }

  function outcome(input: RatingInput): string {
    try {
      return JSON.stringify(rate(input));
    } catch (err) {
      return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
  }

  it("rate() gives the same invoice, or the same error, whichever path prices the usage", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(meteredPrice, anyQuantity), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (priced, compiled) => {
          const plan: PlanInput = {
            key: "p",
            currency: "usd",
            prices: priced.map(([p], i) => ({ key: `x${i}`, type: "metered", meter: `m${i}`, ...p })),
          };
          const planArg = compiled ? compilePlan(plan) : plan;
          const usage = Object.fromEntries(priced.map(([, q], i) => [`m${i}`, q]));
          const slow = Object.fromEntries(priced.map(([, q], i) => [`m${i}`, viaBigJs(q)]));
          expect(outcome({ plan: planArg, period: NOV, usage })).toBe(
            outcome({ plan: planArg, period: NOV, usage: slow }),
          );
        },
      ),
      { numRuns: 500 },
    );
  });
});
