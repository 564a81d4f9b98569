import { spawn } from "node:child_process";
import { afterAll, beforeAll, expect, it } from "vitest";
import { InvoiceStore, type Invoice } from "../src/billing/index.js";
import { busNames, Watermarks } from "../src/bus/index.js";
import { parseCatalogDocument } from "../src/catalog/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { childEnv, eventually, get, log, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - DAY; // yesterday, UTC
const iso = (ms: number) => new Date(ms).toISOString();
const customers = Array.from({ length: 12 }, (_, i) => `cust-${String(i).padStart(2, "0")}`);

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
`;
  await edge.catalog.applyDocument(parseCatalogDocument(doc, edge.catalog.lookup()));
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

/** Runs `tally close --once` as a real process; resolves with its exit code or signal. */
function closeOnce(env: Record<string, string>): Promise<number | string | null> {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "close", "--once", "--json"], {
    env: { ...childEnv(config), ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

it("SIGKILL of the close while storing drafts and while finalizing, then a restart: every invoice once, numbers 1..n", async () => {
  // Customer i makes i + 1 calls yesterday.
  const events = customers.flatMap((c, i) =>
    Array.from({ length: i + 1 }, (_, k) => ({
      id: `${c}-${k}`,
      type: "api_call",
      customer: c,
      time: iso(P1 + k * 60_000),
    })),
  );
  expect((await post(edge, events)).status).toBe(202);
  // The cutoff a few seconds from now (grace from yesterday's end), so these events are on time.
  const graceS = Math.ceil((Date.now() + 3000 - D) / 1000);
  const cutoffMs = D + graceS * 1000;
  const jsm = await edge.nc.jetstreamManager();
  const watermarks = new Watermarks(jsm, busNames(config.nats.prefix), config.nats.partitions, 0, log);
  await eventually(async () => (await watermarks.current()) >= cutoffMs, 30_000, "watermark past the cutoff");

  // A killed close holds the leader lease until it expires: the next one waits for it (short here).
  const env = { TALLY_CLOSE_GRACE: `${graceS}s`, TALLY_CLOSE_LEASE_TTL_MS: "2000" };
  expect(await closeOnce({ ...env, TALLY_FAULT_CLOSE_CRASH_AFTER_DRAFTS: "5" })).toBe("SIGKILL");
  expect(await closeOnce({ ...env, TALLY_FAULT_CLOSE_CRASH_AFTER_FINALIZED: "4" })).toBe("SIGKILL");
  expect(await closeOnce(env)).toBe(0);
  // A further run finds nothing to do.
  expect(await closeOnce(env)).toBe(0);

  const store = await InvoiceStore.open(edge.nc.jetstream(), busNames(config.nats.prefix).invoicesBucket, 1);
  const invoices: Invoice[] = [];
  for (const id of await store.ids()) invoices.push((await store.get(id))!);
  expect(invoices).toHaveLength(customers.length);
  expect(invoices.every((i) => i.status === "finalized" && i.cutoff === iso(cutoffMs))).toBe(true);
  const numbers = invoices.map((i) => Number(i.number!.slice("TALLY-".length))).sort((a, b) => a - b);
  expect(numbers).toEqual(customers.map((_, i) => i + 1));
  for (const inv of invoices) {
    const i = customers.indexOf(inv.customer);
    expect(inv.lines).toHaveLength(1);
    expect(inv.lines[0]).toMatchObject({ quantity: String(i + 1), amount: 3 * (i + 1) });
    expect(inv.total).toBe(3 * (i + 1));
  }
  await eventually(
    async () =>
      (await get(edge, "/v1/invoices?status=finalized&limit=1000")).body.data.length === customers.length,
    10_000,
    "every invoice listed",
  );
});
