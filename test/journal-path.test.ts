import { execFile } from "node:child_process";
import Big from "big.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { documentDate, JournalStore, type JournalEntry } from "../src/accounting/index.js";
import type { Invoice } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { narrationMarker } from "../src/connectors/xero/index.js";
import { startClose, type RunningClose } from "../src/runtime/close.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  childEnv,
  log,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  applyCatalog,
  closeUntilFinalized,
} from "./helpers.js";
import { xeroEnvVars } from "./xero-push-setup.js";
import { startXeroServer, type XeroTestServer } from "./xero-server/index.js";

/**
 * The whole path of the README: events through the edge and sink, the close role finalizing
 * invoices, posting their journal entries and pushing them to (the local) Xero as manual
 * journals; `tally push xero` and `tally reconcile` as a user runs them afterwards.
 */
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - 2 * DAY;
const P2 = D - DAY;
const iso = (ms: number) => new Date(ms).toISOString();

let xero: XeroTestServer;
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let close: RunningClose;
let journal: JournalStore;
const finalized: Invoice[] = [];

beforeAll(async () => {
  xero = await startXeroServer();
  config = testConfig({
    ...xeroEnvVars(xero),
    TALLY_CLOSE_GRACE: `${Math.ceil((Date.now() - P2) / 1000) + 4}s`,
  });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const applied = await applyCatalog(
    edge,
    `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 1000 }
      - { key: calls, type: metered, meter: calls, unit_amount_decimal: "2.5" }
    discounts:
      - { key: launch, percent_off: "10", duration: forever }
customers:
  - { key: acme, currency: usd }
  - { key: beta, currency: usd }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(P1)}" }
accounts:
  receivable: "120"
  cash: "090"
  deferred_revenue: "835"
  discounts: "410"
  revenue: "200"
  prices:
    - { plan: daily, price: calls, account: "260" }
`,
  );
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  const calls = (prefix: string, n: number, customer: string) =>
    Array.from({ length: n }, (_, i) => ({
      id: `${prefix}-${i}`,
      type: "api_call",
      customer,
      time: iso(P1 + 60_000 + i * 1000),
    }));
  expect((await post(edge, [...calls("a", 40, "acme"), ...calls("b", 7, "beta")])).status).toBe(202);
  close = await startClose(config, log, false);
  for (const id of await closeUntilFinalized(close, 2)) finalized.push((await close.invoices.get(id))!);
  expect(finalized).toHaveLength(2);
  await close.xeroIdle();
  journal = await JournalStore.open(edge.nc.jetstream(), busNames(config.nats.prefix).journalBucket, 1);
});
afterAll(async () => {
  journal?.stop();
  await close?.stop();
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
  await xero?.stop();
});

function tally(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["dist/src/cli/main.js", ...args],
      { env: { ...childEnv(config), ...xeroEnvVars(xero), TALLY_RECONCILE_SETTLE: "0s" } },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr }),
    );
  });
}

const major = (minor: number) => new Big(minor).div(100).toFixed();

describe("from an event to a posted journal", () => {
  it("the close role posts one balanced entry per invoice and pushes each to Xero as one manual journal, to the cent", async () => {
    // acme: 1000 flat + 40 × 2.5 = 100 usage, −10% = −110 → 990; beta: 1000 + 17.5 → 18, −101.8 → −102 → 916.
    expect(finalized.map((i) => [i.customer, i.total]).sort()).toEqual([
      ["acme", 990],
      ["beta", 916],
    ]);
    const entries: JournalEntry[] = [];
    for (const inv of finalized) {
      const own = await journal.forDocument(inv.id);
      expect(own.map((e) => e.kind)).toEqual(["invoice"]);
      entries.push(own[0]!);
    }
    const acme = entries.find((e) => e.customer === "acme")!;
    expect(acme.date).toBe(
      documentDate(
        finalized.find((i) => i.customer === "acme")!,
        "UTC",
      ),
    );
    const sums = (e: JournalEntry) =>
      Object.fromEntries(
        [...new Set(e.lines.map((l) => l.account))].map((a) => [
          a,
          e.lines.filter((l) => l.account === a).reduce((s, l) => s + l.debit - l.credit, 0),
        ]),
      );
    expect(sums(acme)).toEqual({ "120": 990, "200": -1000, "260": -100, "410": 110 });

    for (const e of entries) {
      const journals = xero.state.journalsWithNarration(narrationMarker(e.id));
      expect(journals, e.id).toHaveLength(1);
      const j = journals[0]!;
      expect(j.Status).toBe("POSTED");
      expect(j.Date).toBe(e.date);
      expect(j.JournalLines.map((l) => [l.AccountCode, new Big(l.LineAmount).toFixed()])).toEqual(
        e.lines.map((l) => [l.account, major(l.debit - l.credit)]),
      );
    }
    expect(xero.state.allJournals()).toHaveLength(2);
  });

  it("tally push xero --once finds nothing left to push; tally reconcile finds the journal equal to the invoices", async () => {
    const push = await tally("push", "xero", "--once");
    expect(push.stderr).toBe("");
    expect(push.stdout).toMatch(/^due 0; pushed 0;/);
    expect(push.code).toBe(0);
    expect(xero.state.allJournals()).toHaveLength(2);

    const month = documentDate(finalized[0]!, "UTC").slice(0, 7);
    const rec = await tally("reconcile", "--month", month, "--json");
    expect(rec.stderr).toBe("");
    const report = JSON.parse(rec.stdout) as { documents: number; compared: object; differences: unknown[] };
    expect(report).toMatchObject({ compared: { stripe: false, journal: true }, differences: [] });
    expect(report.documents).toBeGreaterThanOrEqual(2);
    expect(rec.code).toBe(0);
  });
});
