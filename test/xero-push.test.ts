import Big from "big.js";
import { afterEach, describe, expect, it } from "vitest";
import type { JournalEntry } from "../src/accounting/journal.js";
import { narrationMarker } from "../src/connectors/xero/index.js";
import { invoiceEntries, invoiceEntry, majorText } from "./fixtures/journal-entries.js";
import { startXeroEnv, type XeroEnv } from "./xero-push-setup.js";
import { State } from "./xero-server/index.js";

/**
 * The Xero push against the local Xero server over HTTP, with its state on a real NATS. Amounts
 * are compared as exact decimal text (the server keeps what was sent, without a float round trip).
 */
let env: XeroEnv | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

const PUT = "PUT /api.xro/2.0/ManualJournals";
/** The server keeps amounts as normalized decimals (a JSON number has no trailing zeros). */
const decimal = (s: string) => new Big(s).toFixed();

/** The one journal Xero holds for an entry (fails on none or several). */
function onlyJournal(e: XeroEnv, entry: JournalEntry) {
  const js = e.srv.state.journalsWithNarration(narrationMarker(entry.id));
  expect(js, `journals for ${entry.id}`).toHaveLength(1);
  return js[0]!;
}

function expectExactlyOnce(e: XeroEnv, entries: readonly JournalEntry[]) {
  for (const entry of entries) onlyJournal(e, entry);
  expect(e.srv.state.allJournals()).toHaveLength(entries.length);
}

describe("xero push: mapping", () => {
  it("one POSTED NoTax journal per entry, each line to the cent with its account and description; a second push sends nothing", async () => {
    env = await startXeroEnv("xero-map");
    const entries = invoiceEntries(7);
    const { pusher } = env.pusher();
    const report = await pusher.pushJournals(entries);
    expect(report).toMatchObject({ pushed: 7, alreadyPushed: 0, failed: [], deferred: 0, requests: 1 });
    for (const entry of entries) {
      const j = onlyJournal(env, entry);
      expect(j.Status).toBe("POSTED");
      expect(j.LineAmountTypes).toBe("NoTax");
      expect(j.Date).toBe(entry.date);
      expect(j.Narration).toContain(entry.document_number);
      expect(j.Narration).toContain(entry.kind);
      expect(j.JournalLines.map((l) => [l.AccountCode, l.LineAmount, l.Description])).toEqual(
        entry.lines.map((l) => [
          l.account,
          decimal(majorText(l.debit > 0 ? l.debit : -l.credit, 2)),
          l.description,
        ]),
      );
      expect(State.total(j)).toBe("0");
      const rec = await env.store.entry(entry.id);
      expect(rec).toMatchObject({ status: "pushed", manual_journal_id: j.ManualJournalID });
    }
    // Base currency read once from GET /Organisation.
    expect(env.srv.requests.of("GET /api.xro/2.0/Organisation")).toHaveLength(1);
    const again = await pusher.pushJournals(entries);
    expect(again).toMatchObject({ pushed: 0, alreadyPushed: 7, requests: 0 });
    expect(env.srv.requests.of(PUT)).toHaveLength(1);
    expectExactlyOnce(env, entries);
  });

  it("JPY (exponent 0) on a JPY organisation: whole yen; KWD (exponent 3) and EUR are not the base currency: failed, not sent, journal.push_failed raised once", async () => {
    env = await startXeroEnv("xero-ccy", { org: { baseCurrency: "JPY" } });
    const jpy = invoiceEntry({
      seed: "jpy",
      currency: "JPY",
      exponent: 0,
      revenue: [
        { account: "200", amount: 123_456 },
        { account: "260", amount: 7 },
      ],
    });
    const kwd = invoiceEntry({
      seed: "kwd",
      currency: "KWD",
      exponent: 3,
      revenue: [{ account: "200", amount: 12_345 }],
    });
    const eur = invoiceEntry({ seed: "eur", currency: "EUR" });
    const { pusher } = env.pusher();
    const report = await pusher.pushJournals([jpy, kwd, eur]);
    expect(report.pushed).toBe(1);
    expect(report.failed.map((f) => [f.entry, f.code]).sort()).toEqual(
      [
        [kwd.id, "not_base_currency"],
        [eur.id, "not_base_currency"],
      ].sort(),
    );
    expect(report.failed.find((f) => f.entry === kwd.id)!.message).toContain("base currency JPY");
    expect(onlyJournal(env, jpy).JournalLines.map((l) => l.LineAmount)).toEqual(["123463", "-123456", "-7"]);
    expect(env.srv.state.journalsWithNarration(kwd.id)).toHaveLength(0);
    expect(env.srv.requests.of(PUT)[0]!.journals).toBe(1);
    await pusher.pushJournals([jpy, kwd, eur]);
    expect(env.emitter.events.map((e) => e.id).sort()).toEqual(
      [`evt_journal_push_failed_${kwd.id}_1`, `evt_journal_push_failed_${eur.id}_1`].sort(),
    );
    expect(env.emitter.events[0]).toMatchObject({
      type: "journal.push_failed",
      data: { target: "xero", code: "not_base_currency" },
    });
    expect(await env.store.entry(kwd.id)).toMatchObject({ status: "failed", notified: true });
  });

  it("a journal Xero refuses (unknown account) is failed with Xero's message; the others in its batch are pushed", async () => {
    env = await startXeroEnv("xero-validation");
    const good = invoiceEntries(4);
    const bad = invoiceEntry({
      seed: "bad",
      revenue: [{ account: "999", amount: 4_200, description: "unmapped" }],
    });
    const { pusher } = env.pusher();
    const report = await pusher.pushJournals([...good.slice(0, 2), bad, ...good.slice(2)]);
    expect(report.pushed).toBe(4);
    expect(report.requests).toBe(1);
    expect(report.failed).toEqual([
      {
        entry: bad.id,
        code: "xero_validation",
        message: "Account code '999' is not a valid code for this document.",
      },
    ]);
    expectExactlyOnce(env, good);
    expect(await env.store.entry(bad.id)).toMatchObject({ status: "failed", notified: true });
    expect(env.emitter.events.map((e) => e.id)).toEqual([`evt_journal_push_failed_${bad.id}_1`]);
    // A failed entry is not retried by the next push; after an operator's reset it is sent again.
    expect((await pusher.pushJournals([bad])).requests).toBe(0);
    env.srv.state.addAccount({ Code: "999", Name: "Unmapped revenue", Type: "REVENUE" });
    expect(await pusher.retryFailed(bad.id)).toBe(true);
    expect((await pusher.pushJournals([bad])).pushed).toBe(1);
    onlyJournal(env, bad);
  });

  it("batches: journals per request and the byte limit split the entries; every journal exactly once", async () => {
    env = await startXeroEnv("xero-batches");
    const entries = invoiceEntries(23);
    const { pusher } = env.pusher({ journalsPerRequest: 10 });
    expect((await pusher.pushJournals(entries)).requests).toBe(3);
    expect(env.srv.requests.of(PUT).map((r) => r.journals)).toEqual([10, 10, 3]);
    expectExactlyOnce(env, entries);
  });
});

describe("xero push: tokens, limits and faults", () => {
  it("an access token expired at Xero (401) is replaced and the call repeated; a token about to expire is refreshed before use", async () => {
    env = await startXeroEnv("xero-token", { tokenTtlSec: 2 });
    const entries = invoiceEntries(6);
    const { pusher, client } = env.pusher({ journalsPerRequest: 2, tokenRefreshMarginMs: 0 });
    await pusher.pushJournals(entries.slice(0, 2));
    expect(env.srv.tokensIssued()).toBe(1);
    env.srv.expireTokens();
    await pusher.pushJournals(entries.slice(2, 4));
    expect(env.srv.tokensIssued()).toBe(2);
    expect(env.srv.requests.api().filter((r) => r.status === 401)).toHaveLength(1);
    // Proactive: with a 1.5 s margin on a 2 s token, the next call takes a new token first.
    const early = env.pusher({ tokenRefreshMarginMs: 1500 });
    await new Promise((r) => setTimeout(r, 600));
    await early.pusher.pushJournals(entries.slice(4));
    await new Promise((r) => setTimeout(r, 600));
    await early.pusher.pushJournals(invoiceEntries(1, "late"));
    expect(early.client.tokensObtained).toBe(2);
    expect(env.srv.requests.api().filter((r) => r.status === 401)).toHaveLength(1);
    expect(client.tokensObtained).toBe(2);
    expectExactlyOnce(env, [...entries, ...invoiceEntries(1, "late")]);
  });

  it("a 429 storm: Retry-After honoured, every journal once, never more calls in any window than the limit (server request log)", async () => {
    const limit = 5;
    const windowMs = 1000;
    env = await startXeroEnv("xero-429", { limits: { perMinute: limit, minuteWindowMs: windowMs } });
    const entries = invoiceEntries(30);
    env.srv.faults.inject429({ count: 6, endpoint: PUT, problem: "minute", retryAfterSec: 1 });
    const { pusher } = env.pusher({
      journalsPerRequest: 2,
      callsPerMinute: limit,
      minuteWindowMs: windowMs,
      concurrency: 3,
    });
    const report = await pusher.pushJournals(entries);
    expect(report.pushed).toBe(30);
    expectExactlyOnce(env, entries);
    const api = env.srv.requests.api();
    expect(api.filter((r) => r.fault === "429")).toHaveLength(6);
    // The server's own limiter never had to refuse: the client kept the budget.
    expect(api.filter((r) => r.fault === "rate_limit")).toHaveLength(0);
    expect(env.srv.requests.maxInWindow(windowMs)).toBeLessThanOrEqual(limit);
    // 15 batches + 6 refused sends + GET /Organisation.
    expect(api).toHaveLength(22);
  });

  it("5xx before execution and a 5xx or a dropped connection after commit: resent under the same key, each journal once", async () => {
    env = await startXeroEnv("xero-5xx");
    const entries = invoiceEntries(9);
    env.srv.faults.inject5xx({ count: 1, status: 503, endpoint: PUT, stage: "before" });
    env.srv.faults.inject5xx({ count: 1, status: 502, endpoint: PUT, stage: "after-commit" });
    env.srv.faults.drop({ count: 1, endpoint: PUT, when: "after-commit" });
    const { pusher } = env.pusher({ journalsPerRequest: 3 });
    const report = await pusher.pushJournals(entries);
    expect(report.pushed).toBe(9);
    expectExactlyOnce(env, entries);
    const puts = env.srv.requests.of(PUT);
    expect(puts.filter((r) => r.replayed)).toHaveLength(2);
    expect(new Set(puts.map((r) => r.idempotencyKey)).size).toBe(3);
  });

  it("the outcome of a send is lost and the key is no longer trusted: the journals are found by narration marker, not created again", async () => {
    env = await startXeroEnv("xero-lookup", { idempotencyTtlMs: 0 });
    const entries = invoiceEntries(5);
    const other = invoiceEntries(120, "other");
    // Unrelated journals (other entries) so that the lookup has to page.
    await env.pusher({ journalsPerRequest: 50 }).pusher.pushJournals(other);
    env.srv.faults.drop({ count: 1, endpoint: PUT, when: "after-commit" });
    const { pusher } = env.pusher({ idempotencyTrustMs: 0, timeoutMs: 200 });
    // The lookup waits until the lost request cannot still be executing (2 × the timeout): one
    // or two runs, depending on how long the retry backoff slept.
    let pushed = 0;
    let lookups = 0;
    for (let run = 0; run < 3 && pushed < 5; run++) {
      const r = await pusher.pushJournals(entries);
      pushed += r.pushed;
      lookups += r.lookups;
      if (r.deferred > 0) await new Promise((res) => setTimeout(res, 450));
    }
    expect(pushed).toBe(5);
    // Two pages (120 other journals + 5) and one ManualJournals request: nothing resent.
    expect(lookups).toBe(2);
    expect(env.srv.requests.of(PUT).filter((r) => r.journals === 5)).toHaveLength(1);
    expectExactlyOnce(env, [...other, ...entries]);
  });

  it("the day's budget spent: the run stops with the rest deferred (no wait for hours, no 429 from Xero); nothing lost", async () => {
    env = await startXeroEnv("xero-day", { limits: { perDay: 3 } });
    const entries = invoiceEntries(10);
    const { pusher } = env.pusher({ journalsPerRequest: 2, callsPerDay: 3, concurrency: 1 });
    const started = Date.now();
    const report = await pusher.pushJournals(entries);
    expect(Date.now() - started).toBeLessThan(10_000);
    // GET /Organisation + 2 requests of 2 journals.
    expect(report).toMatchObject({ pushed: 4, requests: 2 });
    expect(report.deferred).toBeGreaterThanOrEqual(4);
    expect(env.srv.requests.api().filter((r) => r.status === 429)).toHaveLength(0);
    expect(env.srv.state.allJournals()).toHaveLength(4);
    // A new day (another budget): the rest is pushed, each journal once (the base currency from
    // config: no GET /Organisation, so 3 calls carry the 6 remaining journals).
    const next = env.pusher({ journalsPerRequest: 2, callsPerDay: 3, baseCurrency: "USD" });
    env.srv.limits.reset();
    await env.store.updateCallLog(() => ({ recent: [], day: {} }));
    expect((await next.pusher.pushJournals(entries)).pushed).toBe(6);
    expectExactlyOnce(env, entries);
    // Xero's own day limit (429, Retry-After a day): the run ends at once, the batch deferred.
    env.srv.faults.inject429({ count: 1, problem: "day", retryAfterSec: 86_400 });
    const more = invoiceEntries(2, "more");
    const t = Date.now();
    const r = await env.pusher({ baseCurrency: "USD" }).pusher.pushJournals(more);
    expect(Date.now() - t).toBeLessThan(5_000);
    expect(r).toMatchObject({ pushed: 0, deferred: 2 });
    expect((await env.store.openBatches())[0]!.next_attempt_at).not.toBeNull();
  });

  it("an unfinished batch whose members are not passed again: read through the JournalReader and resent under its key, or without a reader found by lookup", async () => {
    env = await startXeroEnv("xero-reader");
    const first = invoiceEntries(4, "r");
    const second = invoiceEntries(4, "s");
    const die = () => {
      throw new Error("killed (in-process stand-in; the SIGKILL variants are in xero-crash.test.ts)");
    };
    const crash = (p: string) => p === "after_response" && die();
    await expect(env.pusher({}, { crashPoint: crash }).pusher.pushJournals(first)).rejects.toThrow("killed");
    const byId = new Map(first.map((e) => [e.id, e]));
    const journal = {
      get: (id: string) => Promise.resolve(byId.get(id) ?? null),
      forDocument: () => Promise.resolve([]),
      list: () => Promise.resolve([]),
    };
    const withReader = await env.pusher({}, { journal }).pusher.pushJournals([]);
    expect(withReader).toMatchObject({ pushed: 4, requests: 1, lookups: 0 });
    expect(env.srv.requests.of(PUT).filter((r) => r.replayed)).toHaveLength(1);
    await expect(env.pusher({}, { crashPoint: crash }).pusher.pushJournals(second)).rejects.toThrow("killed");
    // Looked up only once the request cannot still be executing (2 × the request timeout).
    const noReader = env.pusher({ timeoutMs: 200 }).pusher;
    expect(await noReader.pushJournals([])).toMatchObject({ pushed: 0, deferred: 4, lookups: 0 });
    await new Promise((r) => setTimeout(r, 450));
    expect(await noReader.pushJournals([])).toMatchObject({ pushed: 4, requests: 0, lookups: 1 });
    expectExactlyOnce(env, [...first, ...second]);
    expect(await env.pusher().pusher.missingAccounts(["120", "200", "999"])).toEqual(["999"]);
  });
});
