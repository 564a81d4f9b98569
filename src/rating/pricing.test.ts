import { describe, it, expect } from "vitest";
import { dec, fmt } from "./decimal.js";
import { compilePlan, priceQuantity } from "./pricing.js";
import type { PlanInput } from "./plan-schema.js";

type PriceInput = PlanInput["prices"][number];

function price(p: Omit<PriceInput, "key" | "type" | "meter">) {
  const plan = compilePlan({
    key: "p",
    currency: "usd",
    prices: [{ key: "x", type: "metered", meter: "m", ...p }],
  });
  const compiled = plan.prices[0]!;
  return (q: string) => {
    const r = priceQuantity(compiled, dec(q));
    return {
      amount: fmt(r.amount),
      tiers: r.tiers,
      packages: r.packages === undefined ? undefined : fmt(r.packages),
    };
  };
}

const TIERS = [
  { up_to: 5, unit_amount: 700 },
  { up_to: 10, unit_amount: 650 },
  { up_to: "inf", unit_amount: 600 },
] as const;

describe("per_unit", () => {
  it("multiplies exactly, keeping fractions of a minor unit until the line is rounded", () => {
    const at = price({ unit_amount_decimal: "0.05" });
    expect(at("1").amount).toBe("0.05");
    expect(at("12345").amount).toBe("617.25");
    expect(at("0.1").amount).toBe("0.005");
  });

  it("transform_quantity round up bills every started package", () => {
    const at = price({ unit_amount: 500, transform_quantity: { divide_by: 1000, round: "up" } });
    expect(at("0")).toMatchObject({ amount: "0", packages: "0" });
    expect(at("1")).toMatchObject({ amount: "500", packages: "1" });
    expect(at("1000")).toMatchObject({ amount: "500", packages: "1" });
    expect(at("1000.5")).toMatchObject({ amount: "1000", packages: "2" });
  });

  it("transform_quantity round down bills only complete packages", () => {
    const at = price({ unit_amount: 500, transform_quantity: { divide_by: 1000, round: "down" } });
    expect(at("999")).toMatchObject({ amount: "0", packages: "0" });
    expect(at("1999")).toMatchObject({ amount: "500", packages: "1" });
    expect(at("2000")).toMatchObject({ amount: "1000", packages: "2" });
  });
});

describe("graduated tiers", () => {
  const at = price({ billing_scheme: "tiered", tiers_mode: "graduated", tiers: [...TIERS] });

  it("prices each unit at the rate of the tier it falls in", () => {
    expect(at("12").amount).toBe(String(5 * 700 + 5 * 650 + 2 * 600));
    expect(at("12").tiers).toEqual([
      {
        tier: 1,
        from: "0",
        up_to: "5",
        quantity: "5",
        unit_amount_decimal: "700",
        flat_amount_decimal: "0",
        amount_decimal: "3500",
      },
      {
        tier: 2,
        from: "5",
        up_to: "10",
        quantity: "5",
        unit_amount_decimal: "650",
        flat_amount_decimal: "0",
        amount_decimal: "3250",
      },
      {
        tier: 3,
        from: "10",
        up_to: "inf",
        quantity: "2",
        unit_amount_decimal: "600",
        flat_amount_decimal: "0",
        amount_decimal: "1200",
      },
    ]);
  });

  it("treats up_to as inclusive: a quantity on a boundary does not enter the next tier", () => {
    expect(at("5").amount).toBe("3500");
    expect(at("5").tiers).toHaveLength(1);
    expect(at("5.001").amount).toBe("3500.65");
  });

  it("charges a tier's flat amount once the quantity reaches the tier, and the first tier's always", () => {
    const flat = price({
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      tiers: [
        { up_to: 1000, flat_amount: 2000, unit_amount: 0 },
        { up_to: "inf", unit_amount_decimal: "1.5", flat_amount: 100 },
      ],
    });
    expect(flat("0").amount).toBe("2000");
    expect(flat("1000").amount).toBe("2000");
    expect(flat("1001").amount).toBe("2101.5");
  });
});

describe("volume tiers", () => {
  const at = price({ billing_scheme: "tiered", tiers_mode: "volume", tiers: [...TIERS] });

  it("prices all units at the rate of the tier the total falls in", () => {
    expect(at("5").amount).toBe("3500");
    expect(at("10").amount).toBe("6500");
    expect(at("12").amount).toBe("7200");
    expect(at("12").tiers).toEqual([
      {
        tier: 3,
        from: "10",
        up_to: "inf",
        quantity: "12",
        unit_amount_decimal: "600",
        flat_amount_decimal: "0",
        amount_decimal: "7200",
      },
    ]);
  });

  it("adds the flat amount of the selected tier only", () => {
    const flat = price({
      billing_scheme: "tiered",
      tiers_mode: "volume",
      tiers: [
        { up_to: 100, unit_amount: 10, flat_amount: 0 },
        { up_to: "inf", unit_amount: 8, flat_amount_decimal: "250.5" },
      ],
    });
    expect(flat("100").amount).toBe("1000");
    expect(flat("101").amount).toBe("1058.5");
  });
});
