import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Invoice, InvoiceLine } from "../billing/index.js";
import type { Accounts } from "../catalog/index.js";
import type { LineKind } from "../rating/index.js";
import { windowsOf } from "../usage/windows.js";
import {
  allocate,
  assertBalanced,
  documentDate,
  documentEntry,
  lineParts,
  monthsOf,
  paymentEntry,
  recognitionEntries,
} from "./derive.js";
import type { JournalEntry } from "./journal.js";

const chart: Accounts = {
  receivable: "1200",
  cash: "1000",
  deferred_revenue: "2400",
  discounts: "4900",
  revenue: "4000",
  prices: [{ plan: "pro", price: "calls", account: "4010" }],
};
const iso = (ms: number) => new Date(ms).toISOString();

function line(
  n: number,
  kind: LineKind,
  amount: number,
  from: number,
  to: number,
  price: string | null = null,
): InvoiceLine {
  return {
    number: n,
    kind,
    plan: "pro",
    price,
    meter: kind === "usage" ? "calls" : null,
    description: `${kind} ${n}`,
    period: { start: iso(from), end: iso(to) },
    quantity: "1",
    unit_amount_decimal: null,
    amount,
  };
}

function doc(
  lines: InvoiceLine[],
  period: [number, number],
  finalizedAt: number,
  extra: Partial<Invoice> = {},
): Invoice {
  const total = lines.reduce((s, l) => s + l.amount, 0);
  return {
    id: "inv_000000000000000000000001",
    kind: "invoice",
    status: "finalized",
    number: "TALLY-000001",
    issuer_prefix: "TALLY",
    customer: "acme",
    customer_version: 1,
    subscription: "acme-pro",
    subscription_version: 1,
    plans: [{ key: "pro", version: 1 }],
    currency: "USD",
    currency_exponent: 2,
    period: { start: iso(period[0]), end: iso(period[1]) },
    cutoff: iso(period[1] + 3_600_000),
    lines,
    rating: {} as Invoice["rating"],
    true_ups: [],
    subtotal: total,
    total,
    created_at: iso(finalizedAt),
    finalized_at: iso(finalizedAt),
    ...extra,
  };
}

const net = (e: JournalEntry, account: string) =>
  e.lines.filter((l) => l.account === account).reduce((s, l) => s + l.credit - l.debit, 0);

describe("allocate", () => {
  it("splits exactly with largest remainders, ties to the earlier share, and keeps the sign", () => {
    expect(allocate(100, [1n, 1n, 1n])).toEqual([34, 33, 33]);
    expect(allocate(-100, [1n, 1n, 1n])).toEqual([-34, -33, -33]);
    expect(allocate(10, [1n, 2n])).toEqual([3, 7]);
    expect(allocate(5, [0n, 0n])).toBeNull();
    expect(allocate(5, [1n, -1n])).toBeNull();
  });
});

describe("documentEntry", () => {
  const NOV = Date.UTC(2026, 10, 1);
  const DEC = Date.UTC(2026, 11, 1);

  it("a November invoice finalized on December 1 is dated November 30; flat + usage + discount balance by hand", () => {
    const inv = doc(
      [
        line(1, "flat", 4900, NOV, DEC, "base"),
        line(2, "usage", 1295, NOV, DEC, "calls"),
        line(3, "discount", -490, NOV, DEC),
      ],
      [NOV, DEC],
      DEC + 3_600_000,
    );
    const e = documentEntry(inv, { timezone: "UTC", chart, postedAt: iso(DEC) });
    expect(e.date).toBe("2026-11-30");
    expect(e.kind).toBe("invoice");
    expect(e.lines.map((l) => [l.account, l.debit, l.credit])).toEqual([
      ["1200", 5705, 0],
      ["4000", 0, 4900],
      ["4010", 0, 1295],
      ["4900", 490, 0],
    ]);
  });

  it("Berlin books: the same invoice (UTC month) is dated November 30 and its last hour belongs to December", () => {
    const inv = doc([line(1, "flat", 3000, NOV, DEC, "base")], [NOV, DEC], DEC + 3_600_000);
    expect(documentDate(inv, "Europe/Berlin")).toBe("2026-12-01");
    // Dated Dec 1 in Berlin: the service's Berlin months are Nov (all but one hour) and Dec (1 h): both on the entry.
    const e = documentEntry(inv, { timezone: "Europe/Berlin", chart, postedAt: iso(DEC) });
    expect(e.lines.filter((l) => l.account === "4000").map((l) => l.credit)).toEqual([2996, 4]);
  });

  it("defers service months after the entry's month and recognizes them on the last day of each", () => {
    // Finalized Nov 20 for Nov 15 - Jan 15 (only possible when a period is closed before it ends).
    const from = Date.UTC(2026, 10, 15);
    const to = Date.UTC(2027, 0, 15);
    const inv = doc(
      [line(1, "flat", 6100, from, to, "base"), line(2, "discount", -610, from, to)],
      [from, to],
      Date.UTC(2026, 10, 20),
    );
    const e = documentEntry(inv, { timezone: "UTC", chart, postedAt: iso(from) });
    expect(e.date).toBe("2026-11-20");
    // 61 days: Nov 15 (16 days), Dec (31), Jan (14): 6100 → 1600 / 3100 / 1400; discount −160 / −310 / −140.
    expect(net(e, "4000")).toBe(1600);
    expect(net(e, "4900")).toBe(-160);
    expect(net(e, "2400")).toBe(3100 + 1400 - 310 - 140);
    const recs = recognitionEntries(e, iso(to));
    expect(recs.map((r) => r.date)).toEqual(["2026-12-31", "2027-01-31"]);
    expect(recs.map((r) => [net(r, "4000"), net(r, "4900"), net(r, "2400")])).toEqual([
      [3100, -310, -2790],
      [1400, -140, -1260],
    ]);
  });

  it("a credit note is the reversing entry: debit revenue, credit receivable", () => {
    const cn = doc(
      [line(1, "usage", -350, NOV, DEC, "calls")],
      [DEC, Date.UTC(2027, 0, 1)],
      Date.UTC(2027, 0, 1) + 3_600_000,
      {
        id: "cn_000000000000000000000001",
        kind: "credit_note",
        number: "TALLY-CN-000001",
      },
    );
    const e = documentEntry(cn, { timezone: "UTC", chart, postedAt: iso(DEC) });
    expect(e.kind).toBe("credit_note");
    expect(e.date).toBe("2026-12-31");
    expect(e.lines.map((l) => [l.account, l.debit, l.credit])).toEqual([
      ["1200", 0, 350],
      ["4010", 350, 0],
    ]);
  });

  it("a usage line spanning two months is split by each month's usage; unmapped prices are an error", () => {
    const mid = Date.UTC(2026, 10, 15);
    const l = line(1, "usage", 1000, Date.UTC(2026, 9, 15), mid, "calls");
    expect(lineParts(l, "UTC", ["3", "1"]).map((p) => [p.month, p.amount])).toEqual([
      ["2026-10", 750],
      ["2026-11", 250],
    ]);
    // No usage in either month: by time (17 days of October, 14 of November).
    expect(lineParts(l, "UTC", ["0", "0"]).map((p) => p.amount)).toEqual([548, 452]);
    const { revenue: _r, ...noDefault } = chart;
    expect(() =>
      documentEntry(doc([line(1, "flat", 100, NOV, DEC, "other")], [NOV, DEC], DEC), {
        timezone: "UTC",
        chart: noDefault,
        postedAt: iso(DEC),
      }),
    ).toThrow(/no account/);
  });

  it("a payment debits cash and credits receivable on the day of the event", () => {
    const inv = doc([line(1, "flat", 4900, NOV, DEC, "base")], [NOV, DEC], DEC);
    const e = paymentEntry(
      inv,
      {
        stripe_invoice: "in_1",
        event: "evt_1",
        event_created: Date.UTC(2026, 11, 3, 23) / 1000,
        amount: 4900,
      },
      { timezone: "Asia/Tokyo", chart, postedAt: iso(DEC) },
    )!;
    expect(e.date).toBe("2026-12-04");
    expect(e.lines.map((l) => [l.account, l.debit, l.credit])).toEqual([
      ["1000", 4900, 0],
      ["1200", 0, 4900],
    ]);
  });

  it("refuses an unbalanced entry", () => {
    const inv = doc([line(1, "flat", 4900, NOV, DEC, "base")], [NOV, DEC], DEC);
    const e = documentEntry(inv, { timezone: "UTC", chart, postedAt: iso(DEC) });
    expect(() => assertBalanced({ ...e, lines: [...e.lines, { ...e.lines[0]!, debit: 1 }] })).toThrow(
      /balance/,
    );
  });
});

describe("monthsOf", () => {
  it("gives the usage API's month windows, in zones with DST and odd offsets", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(2020, 0, 1), max: Date.UTC(2030, 0, 1) }),
        fc.integer({ min: 1, max: 400 * 86_400_000 }),
        fc.constantFrom("UTC", "Europe/Berlin", "America/Santiago", "Australia/Lord_Howe", "Asia/Kathmandu"),
        (from, len, tz) => {
          const got = monthsOf({ start: iso(from), end: iso(from + len) }, tz);
          expect(got.map((m) => [m.fromMs, m.toMs])).toEqual(
            windowsOf(from, from + len, "month", tz).map((w) => [w.fromMs, w.toMs]),
          );
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe("property: random documents", () => {
  const kinds: LineKind[] = ["flat", "seat", "usage", "discount", "minimum_commitment", "spend_cap"];
  const base = Date.UTC(2026, 0, 1);
  const DAY = 86_400_000;
  const lineArb = fc.record({
    kind: fc.constantFrom(...kinds),
    amount: fc.integer({ min: -1_000_000, max: 5_000_000 }),
    startDay: fc.integer({ min: 0, max: 300 }),
    days: fc.integer({ min: 1, max: 120 }),
    ms: fc.integer({ min: 0, max: DAY - 1 }),
    price: fc.constantFrom("calls", "base", "seats"),
    usage: fc.array(fc.integer({ min: 0, max: 1000 }), { minLength: 0, maxLength: 6 }),
  });
  it("every entry balances, and the schedule of a document sums to its lines per account", () => {
    fc.assert(
      fc.property(
        fc.array(lineArb, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: -200, max: 200 }),
        fc.constantFrom("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"),
        (specs, finalizeOffsetDays, tz) => {
          const lines = specs.map((s, i) => {
            const from = base + s.startDay * DAY + s.ms;
            const l = line(
              i + 1,
              s.kind,
              s.kind === "discount" ? -Math.abs(s.amount) : s.amount,
              from,
              from + s.days * DAY,
              s.price,
            );
            return l;
          });
          const start = Math.min(...lines.map((l) => Date.parse(l.period.start)));
          const end = Math.max(...lines.map((l) => Date.parse(l.period.end)));
          const inv = doc(lines, [start, end], end + finalizeOffsetDays * DAY);
          const usageByMonth = new Map(
            specs.map((s, i) => [i + 1, s.usage.map(String)] as [number, string[]]),
          );
          const e = documentEntry(inv, { timezone: tz, chart, usageByMonth, postedAt: iso(end) });
          assertBalanced(e);
          const recs = recognitionEntries(e, iso(end));
          recs.forEach(assertBalanced);
          for (const r of recs) expect(r.date > e.date).toBe(true);
          const expected = new Map<string, number>();
          const acct = (l: InvoiceLine) =>
            l.kind === "discount"
              ? "4900"
              : l.kind !== "minimum_commitment" && l.kind !== "spend_cap" && l.price === "calls"
                ? "4010"
                : "4000";
          for (const l of lines) expected.set(acct(l), (expected.get(acct(l)) ?? 0) + l.amount);
          for (const [account, amount] of expected) {
            expect(net(e, account) + recs.reduce((s, r) => s + net(r, account), 0)).toBe(amount);
          }
          // Every deferral is recognized: the deferred account nets to 0 over the document's entries.
          expect(net(e, "2400") + recs.reduce((s, r) => s + net(r, "2400"), 0)).toBe(0);
          expect(net(e, "1200")).toBe(0 - inv.total);
        },
      ),
      { numRuns: 200 },
    );
  });
});
