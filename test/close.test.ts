import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  closeDue,
  InvoiceStore,
  usageSnapshotter,
  type CloseDeps,
  type Invoice,
} from "../src/billing/index.js";
import { busNames, Watermarks } from "../src/bus/index.js";
import { createClickHouse, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { idDigest } from "../src/usage/index.js";
import {
  eventually,
  get,
  log,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  applyCatalog,
} from "./helpers.js";

const DAY = 86_400_000;
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let reader: ClickHouseClient;
let deps: CloseDeps;
let watermarks: Watermarks;

/** UTC midnight today: the subscription bills daily periods P1 = [D-2d, D-1d), P2 = [D-1d, D). */
const D = Math.floor(Date.now() / DAY) * DAY;
const P1 = D - 2 * DAY;
const P2 = D - DAY;
const iso = (ms: number) => new Date(ms).toISOString();

const catalogDoc = `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
  - { key: tokens, event_type: llm, aggregation: sum, value_property: n }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2 }
      - key: tokens
        type: metered
        meter: tokens
        billing_scheme: tiered
        tiers_mode: graduated
        tiers:
          - { up_to: 1000, unit_amount_decimal: "0.5" }
          - { up_to: inf, unit_amount_decimal: "0.1" }
customers:
  - { key: acme, currency: usd, timezone: UTC }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
`;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  // As the close role: its own client as the sink's user, not the edge's read user, whose
  // server-wide concurrency cap other test files saturate on purpose (usage-streams.test.ts).
  reader = createClickHouse(config.clickhouse);
  const names = busNames(config.nats.prefix);
  const jsm = await edge.nc.jetstreamManager();
  watermarks = new Watermarks(jsm, names, config.nats.partitions, 0, log);
  // Through the admin API, as a user would: every section of the document is applied.
  const applied = await applyCatalog(edge, catalogDoc);
  expect(applied.status).toBe(200);
  expect(applied.body).toMatchObject({
    plans: [{ key: "daily", outcome: "created" }],
    customers: [{ key: "acme", outcome: "created" }],
    subscriptions: [{ key: "acme-daily", outcome: "created", version: 1 }],
  });
  deps = {
    catalog: edge.catalog,
    invoices: await InvoiceStore.open(edge.nc.jetstream(), names.invoicesBucket, 1, log),
    snapshots: usageSnapshotter({ clickhouse: reader, database: config.clickhouse.database, watermarks }),
    watermark: () => watermarks.current(),
    log,
    settings: { graceMs: 3_600_000, issuerPrefix: "TALLY", backfillDays: 35 },
  };
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
  await reader?.close();
});

function calls(prefix: string, n: number, atMs: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    type: "api_call",
    customer: "acme",
    time: iso(atMs + i * 1000),
  }));
}

/** A grace period that puts the cutoff of a period ending at `endMs` a few seconds from now. */
function graceEndingSoon(endMs: number): { graceMs: number; cutoffMs: number } {
  const cutoffMs = Date.now() + 3000;
  return { graceMs: cutoffMs - endMs, cutoffMs };
}

async function closeAfter(cutoffMs: number) {
  await eventually(async () => (await watermarks.current()) >= cutoffMs, 30_000, "watermark past the cutoff");
  return closeDue(deps, Date.now());
}

/**
 * A read through the edge. The edge reads as the limited read user, whose concurrency cap is
 * server-wide and which another test file saturates on purpose: 503 (with Retry-After) is the
 * documented answer then, and a client retries it.
 */
async function read(path: string) {
  for (let attempt = 0; ; attempt++) {
    const r = await get(edge, path);
    if (r.status !== 503 || attempt >= 20) return r;
    await new Promise((done) => setTimeout(done, 250));
  }
}

async function usageOf(meter: string, fromMs: number, toMs: number): Promise<string> {
  const r = await read(`/v1/usage?meter=${meter}&customer=acme&from=${fromMs}&to=${toMs}`);
  expect(r.status).toBe(200);
  return r.body.data[0].value as string;
}

describe("the billing close", () => {
  let first: Invoice;

  it("bills a period from the usage the API shows, with the evidence behind each line, once", async () => {
    const onTime = [...calls("p1", 30, P1 + 3600_000), ...calls("p2", 10, P2 + 3600_000)];
    const tokens = [
      { id: "t1", type: "llm", customer: "acme", time: iso(P1 + 100), properties: { n: "800" } },
      { id: "t2", type: "llm", customer: "acme", time: iso(P1 + 200), properties: { n: "700.5" } },
    ];
    expect((await post(edge, [...onTime, ...tokens])).status).toBe(202);
    const { graceMs, cutoffMs } = graceEndingSoon(P2);
    deps.settings.graceMs = graceMs;
    const report = await closeAfter(cutoffMs);
    expect(report.errors).toEqual([]);
    expect(report.finalized).toHaveLength(1);

    first = (await deps.invoices.get(report.finalized[0]!))!;
    expect(first).toMatchObject({
      status: "finalized",
      number: "TALLY-000001",
      customer: "acme",
      subscription: "acme-daily",
      period: { start: iso(P1), end: iso(P2) },
      cutoff: iso(cutoffMs),
      currency: "USD",
    });
    const line = (price: string) => first.lines.find((l) => l.price === price)!;
    // The same numbers the usage API shows for the period.
    expect(line("calls").quantity).toBe(await usageOf("calls", P1, P2));
    expect(line("calls").quantity).toBe("30");
    expect(line("calls").amount).toBe(60);
    expect(line("tokens").quantity).toBe(await usageOf("tokens", P1, P2));
    // 1000 × 0.5 + 500.5 × 0.1 = 550.05 → 550 (one rounding, half up).
    expect(line("tokens").amount).toBe(550);
    expect(first.total).toBe(100 + 60 + 550);
    // Evidence: the exact events behind the line, recomputable from their ids.
    expect(line("calls").snapshot).toMatchObject({
      meter: "calls",
      meter_version: 1,
      event_count: 30,
      id_digest: idDigest(calls("p1", 30, 0).map((e) => e.id)),
      cutoff: iso(cutoffMs),
    });
    expect(line("tokens").snapshot?.id_digest).toBe(idDigest(["t2", "t1"]));

    // Anyone can list the events behind a line and recompute its digest.
    const ids: string[] = [];
    let cursor = "";
    for (let page = 0; page < 10; page++) {
      const r = await read(`/v1/invoices/${first.id}/lines/${line("calls").number}/events?limit=7${cursor}`);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({
        event_count: 30,
        id_digest: line("calls").snapshot!.id_digest,
        matches_line: true,
      });
      ids.push(...r.body.data.map((e: { id: string }) => e.id));
      if (r.body.next_cursor === null) break;
      cursor = `&cursor=${r.body.next_cursor}`;
    }
    expect(ids).toHaveLength(30);
    expect(idDigest(ids)).toBe(line("calls").snapshot!.id_digest);
    expect((await read(`/v1/invoices/${first.id}/lines/${line("base").number}/events`)).status).toBe(400);
    expect((await read(`/v1/invoices/${first.id}/lines/99/events`)).status).toBe(404);

    // Running the close again changes nothing.
    const again = await closeDue(deps, Date.now());
    expect(again.finalized).toEqual([]);
    expect(await deps.invoices.get(first.id)).toEqual(first);
  });

  it("bills events that arrive after the cutoff as true-up lines on the next invoice, with their own service period, once", async () => {
    // Late: event time in P1, received after P1's cutoff.
    expect((await post(edge, calls("late", 5, P1 + 7200_000))).status).toBe(202);
    await eventually(async () => (await usageOf("calls", P1, P2)) === "35", 30_000, "late events countable");
    const { graceMs, cutoffMs } = graceEndingSoon(D);
    deps.settings.graceMs = graceMs;
    const report = await closeAfter(cutoffMs);
    expect(report.errors).toEqual([]);
    expect(report.finalized).toHaveLength(1);
    const second = (await deps.invoices.get(report.finalized[0]!))!;
    expect(second).toMatchObject({ number: "TALLY-000002", period: { start: iso(P2), end: iso(D) } });
    const own = second.lines.filter((l) => l.true_up === undefined);
    expect(own.find((l) => l.price === "calls")?.quantity).toBe("10");
    const trueUps = second.lines.filter((l) => l.true_up !== undefined);
    expect(trueUps).toHaveLength(1);
    expect(trueUps[0]).toMatchObject({
      price: "calls",
      quantity: "35",
      amount: 10,
      period: { start: iso(P1), end: iso(P2) },
      true_up: { invoice: first.id, billed_quantity: "30", billed_amount: 60 },
    });
    expect(trueUps[0]!.snapshot?.event_count).toBe(35);
    const behind = await read(`/v1/invoices/${second.id}/lines/${trueUps[0]!.number}/events?limit=100`);
    expect(behind.body).toMatchObject({ event_count: 35, matches_line: true, period: { start: iso(P1) } });
    expect(idDigest(behind.body.data.map((e: { id: string }) => e.id))).toBe(trueUps[0]!.snapshot!.id_digest);
    expect(second.total).toBe(100 + 20 + 10);
    // Billed once: the first invoice is unchanged, and closing again adds nothing.
    expect(await deps.invoices.get(first.id)).toEqual(first);
    expect((await closeDue(deps, Date.now())).finalized).toEqual([]);

    const numbers = async () =>
      (await get(edge, "/v1/invoices?customer=acme")).body.data.map((i: { number: string }) => i.number);
    await eventually(async () => (await numbers()).length === 2, 10_000, "both invoices listed");
    expect(await numbers()).toEqual(["TALLY-000002", "TALLY-000001"]);
    const one = await get(edge, `/v1/invoices/${second.id}`);
    expect(one.body.total).toBe(130);
  });

  it("prices the current period live for the customer (upcoming invoice), with the same path, storing nothing", async () => {
    const now = Date.now();
    expect((await post(edge, calls("today", 4, Math.max(D, now - 60_000)).slice(0, 4))).status).toBe(202);
    await eventually(
      async () => (await usageOf("calls", D, D + DAY)) === "4",
      30_000,
      "today's events countable",
    );
    const r = await read("/v1/customers/acme/upcoming-invoice");
    expect(r.status).toBe(200);
    expect(r.body.data).toHaveLength(1);
    const up = r.body.data[0];
    expect(up).toMatchObject({
      status: "upcoming",
      number: null,
      subscription: "acme-daily",
      period: { start: iso(D), end: iso(D + DAY) },
    });
    const calls0 = up.lines.find((l: { price: string }) => l.price === "calls");
    expect(calls0).toMatchObject({ quantity: "4", amount: 8 });
    expect(calls0.snapshot.id_digest).toBe(idDigest(["today-0", "today-1", "today-2", "today-3"]));
    expect(up.total).toBe(100 + 8);
    // Nothing stored: the current period's invoice does not exist yet.
    expect((await read(`/v1/invoices/${up.id}`)).status).toBe(404);
    expect((await read("/v1/customers/nobody/upcoming-invoice")).status).toBe(404);
  });
});
