import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Meter } from "../src/catalog/index.js";
import { createClickHouse, lit, migrate, sql, type ClickHouseClient } from "../src/clickhouse/index.js";
import {
  emptyUsageValue,
  queryEvidence,
  queryTotals,
  queryUsage,
  type UsageDeps,
} from "../src/usage/index.js";
import { rng, testConfig, type RawEventRow as Row } from "./helpers.js";

// queryTotals answers several meters in one scan for the close; the close's numbers must be the
// ones the usage API shows. This compares every (meter, customer) of queryTotals with queryUsage
// (no window) and queryEvidence over the same data: three event types, values that are not
// decimals, missing properties, filters, events received after the cut, and ids written twice
// the way the sink rewrites (a record in event_rewrites, then the identical row).

let ch: ClickHouseClient;
let deps: UsageDeps;
const db = `totals_${Math.random().toString(36).slice(2, 10)}`;
const from = Date.UTC(2026, 9, 1);
const to = Date.UTC(2026, 10, 1);
const cut = to + 3_600_000;

const meter = (m: Partial<Meter> & Pick<Meter, "key" | "event_type" | "aggregation">): Meter => ({
  version: 1,
  applied_at: new Date(from).toISOString(),
  ...m,
});
const meters: Meter[] = [
  meter({ key: "calls", event_type: "api_call", aggregation: "count" }),
  meter({ key: "tokens", event_type: "api_call", aggregation: "sum", value_property: "tokens" }),
  meter({
    key: "eu_tokens",
    event_type: "api_call",
    aggregation: "sum",
    value_property: "tokens",
    filters: [{ property: "region", in: ["eu", "o'x\\"] }],
  }),
  meter({ key: "users", event_type: "api_call", aggregation: "unique_count", value_property: "user" }),
  meter({ key: "peak_gb", event_type: "storage", aggregation: "max", value_property: "gb" }),
  meter({ key: "low_gb", event_type: "storage", aggregation: "min", value_property: "gb" }),
  meter({ key: "plan", event_type: "storage", aggregation: "latest", value_property: "tier" }),
  meter({
    key: "jobs",
    event_type: "job",
    aggregation: "count",
    filters: [{ property: "status", not_equals: "failed" }],
  }),
];

function dataset(): Row[] {
  const r = rng(42);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const customers = Array.from({ length: 40 }, (_, i) => `cust-${i}`);
  customers.push("o'brien\\", "ünï");
  const rows: Row[] = [];
  for (let i = 0; i < 6000; i++) {
    const type = pick(["api_call", "api_call", "storage", "job", "other"]);
    const ts = from - 86_400_000 + Math.floor(r() * (to - from + 2 * 86_400_000));
    const props: Record<string, string> = {};
    if (type === "api_call") {
      if (r() < 0.9) props.tokens = pick(["1", "2.5", "100", "0.000000001", "abc", "", "1e3", "-3"]);
      props.region = pick(["eu", "us", "o'x\\"]);
      if (r() < 0.8) props.user = `u${Math.floor(r() * 30)}`;
    } else if (type === "storage") {
      if (r() < 0.9) props.gb = pick(["10", "12.75", "3", "x", "99999999999999999999.999999999"]);
      props.tier = pick(["free", "pro", "ent"]);
    } else {
      props.status = pick(["ok", "failed", "retried"]);
    }
    rows.push({
      customer: pick(customers),
      type,
      ts,
      id: `e-${i}`,
      // a tenth arrive after the cut: the close must not see them
      received: r() < 0.1 ? cut + 1 + Math.floor(r() * 1000) : ts + Math.floor(r() * 10_000),
      props,
    });
  }
  return rows;
}

function insert(rows: readonly Row[]): string {
  const values = rows.map((e) => {
    const keys = Object.keys(e.props);
    return `(${[e.customer, e.type, e.ts, e.id, e.received, "sdk", keys, keys.map((k) => e.props[k]!)]
      .map((v) => lit(v))
      .join(", ")})`;
  });
  return `INSERT INTO ${sql.eventsTable(db)} (customer, type, ts, id, received, source, prop_keys, prop_values) VALUES ${values.join(", ")}`;
}

beforeAll(async () => {
  const config = testConfig();
  ch = createClickHouse({ ...config.clickhouse, database: "default" });
  await migrate(ch, db);
  deps = { clickhouse: ch, database: db, watermarks: { current: () => Promise.resolve(Date.now()) } };
  const rows = dataset();
  await ch.command({ query: insert(rows) });
  // Every 7th event written a second time as the sink does it: its record first, then the copy.
  const copies = rows.filter((_, i) => i % 7 === 0);
  await ch.command({
    query: `INSERT INTO ${sql.rewritesTable(db)} (customer, type, ts, id, recorded_at) VALUES ${copies
      .map((e) => `(${[e.customer, e.type, e.ts, e.id].map((v) => lit(v)).join(", ")}, now())`)
      .join(", ")}`,
  });
  await ch.command({ query: insert(copies) });
});

afterAll(async () => {
  await ch?.command({ query: `DROP DATABASE IF EXISTS ${db}` });
  await ch?.close();
});

/** What queryUsage + queryEvidence say for each meter and customer of a scope. */
async function expected(customers: readonly string[] | undefined, receivedUpToMs: number | undefined) {
  return Promise.all(
    meters.map(async (m) => {
      const req = { meter: m, fromMs: from, toMs: to, customers, receivedUpToMs };
      const usage = await queryUsage(deps, req);
      const evidence = await queryEvidence(deps, req);
      const out = new Map<string, { value: string | null; eventCount: number; idDigest: string }>();
      for (const row of usage.data) {
        const e = evidence.get(row.customer!);
        out.set(row.customer!, {
          value: row.value,
          eventCount: e?.eventCount ?? 0,
          idDigest: e?.idDigest ?? "0".repeat(32),
        });
      }
      return out;
    }),
  );
}

describe("queryTotals", () => {
  for (const [label, customers, receivedUpToMs] of [
    ["every customer, with the receive cut", undefined, cut],
    ["every customer, no cut", undefined, undefined],
    [
      "a list of customers (quotes, backslash, non-ASCII), with the cut",
      ["cust-3", "o'brien\\", "ünï", "nobody"],
      cut,
    ],
  ] as const) {
    it(`equals queryUsage and queryEvidence per meter and customer: ${label}`, async () => {
      const want = await expected(customers, receivedUpToMs);
      const got = await queryTotals(deps, { meters, fromMs: from, toMs: to, customers, receivedUpToMs });
      let compared = 0;
      meters.forEach((m, i) => {
        const w = want[i]!;
        const g = got.totals[i]!;
        const names = new Set([...w.keys(), ...g.keys()]);
        for (const c of names) {
          const a = w.get(c);
          const b = g.get(c) ?? {
            value: emptyUsageValue(m.aggregation),
            eventCount: 0,
            idDigest: "0".repeat(32),
          };
          expect({ meter: m.key, customer: c, ...b }).toEqual({ meter: m.key, customer: c, ...a });
          compared++;
        }
      });
      // The data reach every meter and many customers: a comparison of nothing proves nothing.
      expect(compared).toBeGreaterThan(customers === undefined ? 200 : 15);
      expect(got.totals.every((t) => t.size > 0)).toBe(true);
    });
  }

  it("refuses a gauge meter", async () => {
    const gauge = meter({
      key: "gb_hours",
      event_type: "storage",
      aggregation: "time_weighted_sum",
      value_property: "gb",
      time_unit: "hour",
    });
    await expect(queryTotals(deps, { meters: [gauge], fromMs: from, toMs: to })).rejects.toThrow(/gauge/);
  });
});
