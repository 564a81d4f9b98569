import { describe, expect, it } from "vitest";
import type { JournalEntry } from "../../accounting/journal.js";
import { decideCall, guardedWindow } from "./limiter.js";
import { entryIdOf, narrationMarker, planBatches, requestBody, toManualJournal } from "./map.js";

const entry = (over: Partial<JournalEntry> = {}): JournalEntry => ({
  id: "je_0123abcd",
  kind: "invoice",
  date: "2026-11-30",
  currency: "USD",
  currency_exponent: 2,
  customer: "cus_1",
  document: "inv_1",
  document_number: "TALLY-000042",
  narration: "Invoice TALLY-000042 finalized",
  lines: [
    { account: "120", debit: 1_005, credit: 0, description: "AR", service_period: null },
    { account: "200", debit: 0, credit: 1_000, description: "Usage", service_period: null },
    { account: "260", debit: 0, credit: 5, description: 'Fee "quoted"', service_period: null },
    { account: "410", debit: 0, credit: 0, description: "zero", service_period: null },
  ],
  posted_at: "2026-11-30T00:00:00Z",
  ...over,
});

describe("toManualJournal", () => {
  it("writes exact decimal literals (debit +, credit −), skips zero lines, and carries the marker", () => {
    const m = toManualJournal(entry(), "usd");
    expect(m.ok).toBe(true);
    if (!m.ok) return;
    expect(m.json).toBe(
      '{"Narration":"Invoice TALLY-000042 finalized (invoice TALLY-000042) [tally:je_0123abcd]","Date":"2026-11-30",' +
        '"Status":"POSTED","LineAmountTypes":"NoTax","JournalLines":[' +
        '{"LineAmount":10.05,"AccountCode":"120","Description":"AR"},' +
        '{"LineAmount":-10.00,"AccountCode":"200","Description":"Usage"},' +
        '{"LineAmount":-0.05,"AccountCode":"260","Description":"Fee \\"quoted\\""}]}',
    );
    const parsed = JSON.parse(requestBody([m.json])) as { ManualJournals: { Narration: string }[] };
    expect(entryIdOf(parsed.ManualJournals[0]!.Narration)).toBe("je_0123abcd");
    expect(narrationMarker("je_x")).toBe("[tally:je_x]");
  });

  it("exponent 0 gives whole units; exponent 3 is exact when it fits 2 decimals, refused otherwise", () => {
    const jpy = toManualJournal(
      entry({
        currency: "JPY",
        currency_exponent: 0,
        lines: [
          { account: "120", debit: 9_007_199_254_740_991, credit: 0, description: "", service_period: null },
          { account: "200", debit: 0, credit: 9_007_199_254_740_991, description: "", service_period: null },
        ],
      }),
      "JPY",
    );
    expect(jpy.ok && jpy.json).toContain('"LineAmount":9007199254740991,');
    const kwd = (amount: number) =>
      toManualJournal(
        entry({
          currency: "KWD",
          currency_exponent: 3,
          lines: [
            { account: "120", debit: amount, credit: 0, description: "", service_period: null },
            { account: "200", debit: 0, credit: amount, description: "", service_period: null },
          ],
        }),
        "KWD",
      );
    expect(kwd(1_230).ok && (kwd(1_230) as { json: string }).json).toContain('"LineAmount":1.23,');
    expect(kwd(1_234)).toMatchObject({ ok: false, code: "amount_precision" });
    expect(toManualJournal(entry({ currency: "KWD", currency_exponent: 3 }), "USD")).toMatchObject({
      ok: false,
      code: "not_base_currency",
    });
  });

  it("refuses unbalanced entries, fewer than two lines, a line with both sides", () => {
    const l = entry().lines;
    expect(toManualJournal(entry({ lines: [l[0]!, l[1]!] }), "USD")).toMatchObject({
      ok: false,
      code: "unbalanced",
    });
    expect(toManualJournal(entry({ lines: [l[3]!, l[3]!] }), "USD")).toMatchObject({
      ok: false,
      code: "too_few_lines",
    });
    expect(toManualJournal(entry({ lines: [{ ...l[0]!, credit: 1 }, l[1]!, l[2]!] }), "USD")).toMatchObject({
      ok: false,
      code: "invalid_line",
    });
  });
});

describe("planBatches", () => {
  it("splits by count and by bytes, in order; a journal larger than the limit alone is set aside", () => {
    const j = (n: number, size: number) => ({ n, json: "x".repeat(size) });
    const { batches, tooLarge } = planBatches([j(1, 10), j(2, 10), j(3, 10), j(4, 5000), j(5, 10)], 2, 1000);
    expect(batches.map((b) => b.map((x) => x.n))).toEqual([
      [1, 2],
      [3, 5],
    ]);
    expect(tooLarge.map((x) => x.n)).toEqual([4]);
    const bytes = planBatches([j(1, 400), j(2, 400), j(3, 400)], 50, 900);
    expect(bytes.batches.map((b) => b.length)).toEqual([2, 1]);
    for (const b of bytes.batches)
      expect(Buffer.byteLength(requestBody(b.map((x) => x.json)))).toBeLessThanOrEqual(900);
  });
});

describe("decideCall", () => {
  const limits = { perMinute: 60, windowMs: 60_000, perDay: 5000 };
  it("never grants more than perMinute in any guarded window, and waits for the oldest grant to leave it", () => {
    let log = { recent: [] as number[], day: {} as Record<string, number> };
    const grants: number[] = [];
    let t = 1_000_000_000_000;
    while (grants.length < 200) {
      const d = decideCall(log, t, limits);
      if ("grant" in d) {
        log = d.grant;
        grants.push(t);
        t += 37;
      } else {
        expect(d.waitMs).toBeGreaterThan(0);
        t += d.waitMs;
      }
    }
    const win = guardedWindow(60_000);
    for (let i = 60; i < grants.length; i++) expect(grants[i]! - grants[i - 60]!).toBeGreaterThanOrEqual(win);
  });
  it("stops at perDay within a day, whatever the minute budget", () => {
    const now = 1_000_000_000_000;
    const minute = Math.floor(now / 60_000);
    const d = decideCall(
      { recent: [], day: { [String(minute - 100)]: 4000, [String(minute - 2)]: 1000 } },
      now,
      limits,
    );
    // The 4000 calls of 100 minutes ago leave the (1441-minute, conservative) day window first.
    expect("waitMs" in d && d.waitMs).toBe((minute - 100 + 1441) * 60_000 - now);
    expect("grant" in decideCall({ recent: [], day: { [String(minute - 1442)]: 5000 } }, now, limits)).toBe(
      true,
    );
  });
});
