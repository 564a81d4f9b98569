import { spawn } from "node:child_process";
import { afterAll, beforeAll, expect, it } from "vitest";
import { documentEntryId, JournalStore } from "../src/accounting/index.js";
import { InvoiceStore, type Invoice } from "../src/billing/index.js";
import { busNames, Watermarks } from "../src/bus/index.js";
import { parseCatalogDocument } from "../src/catalog/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { childEnv, eventually, log, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

/*
 * Journal posting killed with SIGKILL in the middle (a real `tally close --once` process with
 * TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES), then run again: every document has exactly one entry,
 * and the entries stored before the kill are left exactly as they were (immutable).
 */
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - DAY;
const iso = (ms: number) => new Date(ms).toISOString();
const customers = Array.from({ length: 150 }, (_, i) => `cust-${String(i).padStart(2, "0")}`);

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const doc = `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - { key: daily, currency: usd, interval: day, prices: [{ key: calls, type: metered, meter: calls, unit_amount: 3 }] }
customers:
${customers.map((c) => `  - { key: ${c}, currency: usd }`).join("\n")}
subscriptions:
${customers.map((c) => `  - { key: sub-${c}, customer: ${c}, plan: daily, started_at: "${iso(P1)}" }`).join("\n")}
accounts: { receivable: "1200", cash: "1000", deferred_revenue: "2400", discounts: "4900", revenue: "4000" }
`;
  await edge.catalog.applyDocument(parseCatalogDocument(doc, edge.catalog.lookup()));
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

function closeOnce(env: Record<string, string>): Promise<number | string | null> {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "close", "--once", "--json"], {
    env: { ...childEnv(config), ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

it("SIGKILL while posting entries, then a restart: one entry per document, the early ones untouched", async () => {
  const events = customers.flatMap((c, i) =>
    Array.from({ length: (i % 5) + 1 }, (_, k) => ({
      id: `${c}-${k}`,
      type: "api_call",
      customer: c,
      time: iso(P1 + k * 60_000),
    })),
  );
  expect((await post(edge, events)).status).toBe(202);
  const graceS = Math.ceil((Date.now() + 3000 - D) / 1000);
  const cutoffMs = D + graceS * 1000;
  const names = busNames(config.nats.prefix);
  const watermarks = new Watermarks(await edge.nc.jetstreamManager(), names, config.nats.partitions, 0, log);
  await eventually(async () => (await watermarks.current()) >= cutoffMs, 30_000, "watermark past the cutoff");

  const env = { TALLY_CLOSE_GRACE: `${graceS}s`, TALLY_CLOSE_LEASE_TTL_MS: "2000" };
  expect(await closeOnce({ ...env, TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES: "10" })).toBe("SIGKILL");
  const journal = await JournalStore.open(edge.nc.jetstream(), names.journalBucket, 1);
  const all = () => journal.list({ from: "2000-01-01", to: "2100-12-31" });
  const early = await all();
  // Killed mid-way: some entries stored, not all (64 are posted at a time).
  expect(early.length).toBeGreaterThanOrEqual(10);
  expect(early.length).toBeLessThan(customers.length);
  expect(await closeOnce(env)).toBe(0);
  expect(await closeOnce(env)).toBe(0);

  const store = await InvoiceStore.open(edge.nc.jetstream(), names.invoicesBucket, 1);
  const invoices: Invoice[] = [];
  for (const id of await store.ids()) invoices.push((await store.get(id))!);
  expect(invoices).toHaveLength(customers.length);
  const entries = await all();
  expect(entries.map((e) => e.id).sort()).toEqual(invoices.map((i) => documentEntryId(i)).sort());
  for (const inv of invoices) {
    const mine = await journal.forDocument(inv.id);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.lines.map((l) => [l.account, l.debit, l.credit])).toEqual([
      ["1200", inv.total, 0],
      ["4000", 0, inv.total],
    ]);
  }
  // Entries stored before the kill are unchanged (create-only: never rewritten with a new posted_at).
  for (const e of early) expect(await journal.get(e.id)).toEqual(e);
});
