import { describe, expect, it } from "vitest";
import type { Invoice, InvoiceLine } from "../billing/index.js";
import type { Accounts } from "../catalog/index.js";
import { documentEntry, recognitionEntries } from "./derive.js";
import type { JournalEntry } from "./journal.js";
import { minorToDecimal } from "../rating/index.js";
import { exportCsv, revenueReport, type RevenueInputs } from "./revenue.js";

const chart: Accounts = {
  receivable: "1200",
  cash: "1000",
  deferred_revenue: "2400",
  discounts: "4900",
  revenue: "4000",
  prices: [],
};
const iso = (ms: number) => new Date(ms).toISOString();
const OCT15 = Date.UTC(2026, 9, 15);
const NOV1 = Date.UTC(2026, 10, 1);
const NOV15 = Date.UTC(2026, 10, 15);
const DEC1 = Date.UTC(2026, 11, 1);
const JAN1 = Date.UTC(2027, 0, 1);

function doc(
  id: string,
  lines: [InvoiceLine["kind"], number, number, number][],
  end: number,
  finalized: number,
): Invoice {
  const ls: InvoiceLine[] = lines.map(([kind, amount, from, to], i) => ({
    number: i + 1,
    kind,
    plan: "pro",
    price: kind === "discount" ? null : "base",
    meter: null,
    description: `${kind}, "pro", ${i + 1}`,
    period: { start: iso(from), end: iso(to) },
    quantity: "1",
    unit_amount_decimal: null,
    amount,
  }));
  const total = ls.reduce((s, l) => s + l.amount, 0);
  return {
    id,
    kind: "invoice",
    status: "finalized",
    number: `TALLY-${id.slice(-6)}`,
    issuer_prefix: "TALLY",
    customer: "acme",
    customer_version: 1,
    subscription: "s",
    subscription_version: 1,
    plans: [],
    currency: "USD",
    currency_exponent: 2,
    period: { start: ls[0]!.period.start, end: iso(end) },
    cutoff: iso(end),
    lines: ls,
    rating: {} as Invoice["rating"],
    true_ups: [],
    subtotal: total,
    total,
    created_at: iso(finalized),
    finalized_at: iso(finalized),
  };
}

/** What the store would give a month's report: entries dated in it, with service in it, deferred ones. */
function inputs(all: JournalEntry[], month: string): RevenueInputs {
  return {
    dated: all.filter((e) => e.date.startsWith(month)),
    service: all.filter((e) => e.lines.some((l) => l.service_period?.start.startsWith(month))),
    deferred: all.filter((e) => e.lines.some((l) => l.account === "2400")),
  };
}

describe("revenueReport", () => {
  // Oct 15 - Nov 15 billed in arrears (dated Nov 14): October's half is a catch-up in November.
  const arrears = documentEntry(
    doc(
      "inv_000000000000000000000001",
      [
        ["flat", 3100, OCT15, NOV15],
        ["discount", -310, OCT15, NOV15],
      ],
      NOV15,
      NOV15 + 3_600_000,
    ),
    { timezone: "UTC", chart, postedAt: iso(NOV15) },
  );
  // Nov 1 - Jan 1 finalized Nov 2: December deferred.
  const advance = documentEntry(
    doc("inv_000000000000000000000002", [["flat", 6100, NOV1, JAN1]], JAN1, NOV1 + 86_400_000),
    {
      timezone: "UTC",
      chart,
      postedAt: iso(NOV1),
    },
  );
  const recs = recognitionEntries(advance, iso(DEC1));
  const all = [arrears, advance, ...recs];

  it("recognized by service month, posted by date (catch-ups), billed, deferred balance; contra-revenue nets", () => {
    const oct = revenueReport("2026-10", "UTC", chart, inputs(all, "2026-10"));
    // 17 of 31 days in October: 1700 and −170.
    expect(oct.data).toEqual([
      expect.objectContaining({ account: "4000", role: "revenue", recognized: 1700, posted: 0, billed: 0 }),
      expect.objectContaining({ account: "4900", role: "contra_revenue", recognized: -170, posted: 0 }),
    ]);
    expect(oct.totals).toEqual([expect.objectContaining({ currency: "USD", recognized: 1530 })]);
    const nov = revenueReport("2026-11", "UTC", chart, inputs(all, "2026-11"));
    expect(nov.data).toEqual([
      // 1400 of the arrears invoice + 3000 of the advance one (30 of 61 days); posted includes October's catch-up.
      expect.objectContaining({
        account: "4000",
        recognized: 1400 + 3000,
        posted: 3100 + 3000,
        billed: 3100 + 6100,
        deferred_balance: 3100,
      }),
      expect.objectContaining({
        account: "4900",
        recognized: -140,
        posted: -310,
        billed: -310,
        deferred_balance: 0,
      }),
    ]);
    const dec = revenueReport("2026-12", "UTC", chart, inputs(all, "2026-12"));
    expect(dec.data).toEqual([
      expect.objectContaining({
        account: "4000",
        recognized: 3100,
        posted: 3100,
        billed: 0,
        deferred_balance: 0,
      }),
    ]);
    // The schedule of each document sums to its total across months.
    const sum = [oct, nov, dec].reduce((s, r) => s + r.totals[0]!.recognized, 0);
    expect(sum).toBe(3100 - 310 + 6100);
  });

  it("exports one CSV row per line, amounts in major units, text quoted", () => {
    const csv = exportCsv([arrears]).split("\n");
    expect(csv[0]).toBe(
      "entry_id,date,kind,document_number,customer,account,debit,credit,currency,service_start,service_end,description",
    );
    expect(csv[1]).toBe(
      `${arrears.id},2026-11-14,invoice,TALLY-000001,acme,1200,27.90,0.00,USD,,,Accounts receivable TALLY-000001`,
    );
    expect(csv[2]).toBe(
      `${arrears.id},2026-11-14,invoice,TALLY-000001,acme,4000,0.00,17.00,USD,${iso(OCT15)},${iso(NOV1)},"flat, ""pro"", 1"`,
    );
    expect(minorToDecimal(-5, 2)).toBe("-0.05");
    expect(minorToDecimal(1234, 0)).toBe("1234");
    expect(minorToDecimal(1, 3)).toBe("0.001");
  });
});
