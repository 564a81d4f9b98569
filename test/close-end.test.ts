import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeDue, type Invoice } from "../src/billing/index.js";
import { eventually } from "./helpers.js";
import { calls, DAY, HOUR, iso, service, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * A subscription ending mid-period: daily plan (2400 flat, 3 seats at 100, 2 per call), started
 * at D-2d, ended at D-1d+6h. Its last invoice covers [D-1d, D-1d+6h): fees prorated 6/24, usage
 * only before ended_at. Late usage of that last period has no next invoice to travel on: the
 * close issues one true-up-only invoice for the round after the end, once.
 */
const D = today();
const END = D - DAY + 6 * HOUR;
let env: CloseEnv;

beforeAll(async () => {
  env = await startCloseEnv(`
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 2400 }
      - { key: seat, type: seat, unit_amount: 100 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2 }
customers:
  - { key: acme, currency: usd, timezone: UTC }
subscriptions:
  - key: acme-daily
    customer: acme
    plan: daily
    started_at: "${iso(D - 2 * DAY)}"
    ended_at: "${iso(END)}"
    seats: { quantity: "3" }
`);
});
afterAll(async () => {
  await env?.stop();
});

describe("a subscription ending mid-period", () => {
  let last: Invoice;

  it("bills its last period up to ended_at: fees prorated, usage only before the end", async () => {
    await env.send([
      ...calls("p1", "acme", 10, D - 2 * DAY + HOUR),
      ...calls("p2", "acme", 4, D - DAY + HOUR),
      ...calls("after-end", "acme", 7, END + 2 * HOUR), // after ended_at: never billed
    ]);
    const first = await env.closeThrough(D - DAY);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(1);
    // The last invoice is due when the service ends (ended_at + grace), not at the period's end.
    const early = await env.closeThrough(END - HOUR);
    expect(early.finalized).toEqual([]);
    const second = await env.closeThrough(END);
    expect(second.errors).toEqual([]);
    expect(second.finalized).toHaveLength(1);
    last = (await env.deps.invoices.get(second.finalized[0]!))!;
    expect(service(last)).toEqual([iso(D - DAY), iso(END)]);
    expect(last.period).toEqual({ start: iso(D - DAY), end: iso(D) });
    const line = (price: string) => last.lines.find((l) => l.price === price)!;
    const sixOf24 = { seconds: String(6 * 3600), period_seconds: String(24 * 3600) };
    // 2400 × 6/24 = 600; 3 seats × 100 × 6/24 = 75; 4 calls × 2 = 8.
    expect(line("base")).toMatchObject({ amount: 600, proration: sixOf24 });
    expect(line("seat")).toMatchObject({ quantity: "3", amount: 75, proration: sixOf24 });
    expect(line("calls")).toMatchObject({ quantity: "4", amount: 8 });
    expect(line("calls").period).toEqual({ start: iso(D - DAY), end: iso(END) });
    expect(line("calls").quantity).toBe(await env.usage("calls", "acme", D - DAY, END));
    expect(last.total).toBe(600 + 75 + 8);
  });

  it("bills late usage of its last period on one true-up-only invoice, however often the close runs", async () => {
    await env.send([
      ...calls("late", "acme", 3, D - DAY + 2 * HOUR),
      ...calls("late-after-end", "acme", 2, END + HOUR),
    ]);
    await eventually(
      async () => (await env.usage("calls", "acme", D - DAY, END)) === "7",
      30_000,
      "late usage",
    );
    // The round after the last period, [D, D+1d), closes now (a grace making it due).
    const third = await env.closeThrough(D + DAY);
    expect(third.errors).toEqual([]);
    expect(third.finalized).toHaveLength(1);
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);

    const docs = await env.documents("acme-daily");
    expect(docs.map((d) => [d.kind ?? "invoice", d.status, d.number, d.total])).toEqual([
      ["invoice", "finalized", "TALLY-000001", 2400 + 300 + 20],
      ["invoice", "finalized", "TALLY-000002", 683],
      ["invoice", "finalized", "TALLY-000003", 6],
    ]);
    const adjustment = docs[2]!;
    expect(adjustment.id).toBe(third.finalized[0]);
    expect(adjustment.period).toEqual({ start: iso(D), end: iso(D + DAY) });
    expect(adjustment.lines).toHaveLength(1);
    // Billed 4 calls (8), now 7 (14): a 6 true-up with the original service period.
    expect(adjustment.lines[0]).toMatchObject({
      number: 1,
      price: "calls",
      quantity: "7",
      amount: 6,
      period: { start: iso(D - DAY), end: iso(END) },
      true_up: { invoice: last.id, billed_quantity: "4", billed_amount: 8 },
    });
    expect(adjustment.lines[0]!.snapshot?.event_count).toBe(7);
    expect(adjustment.true_ups).toEqual([{ invoice: last.id, usage: [{ calls: "7" }] }]);
    // The last invoice itself never changed.
    expect(await env.deps.invoices.get(last.id)).toEqual(last);
  });
});
