import { spawn } from "node:child_process";
import { DateTime } from "luxon";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Meter } from "../src/catalog/index.js";
import {
  createClickHouse,
  lit,
  migrate,
  migrations,
  queryRows,
  sql,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import {
  fillRollup,
  queryTotals,
  queryUsage,
  readChain,
  type UsageDeps,
  type UsageRequest,
  type WindowSize,
} from "../src/usage/index.js";
import { openChdb, type Chdb } from "./chdb.js";
import { rng, testConfig, type RawEventRow as Row } from "./helpers.js";

// The rollup must never change an answer: every usage read answered from the rollup (closed
// receive hours) plus raw events (the open tail) must equal the raw path, for every aggregation
// computed in ClickHouse, hour/day/month windows in zones with DST and half-hour and 45-minute
// offsets, group-bys, receive cuts, late events that arrive after their event hour was filled,
// rewritten ids (copies with later receive times) and a new meter version. On the real 18.16
// server AND on ClickHouse 26 through chdb, through queryUsage/queryTotals themselves.

const DAY = 86_400_000;
const HOUR = 3_600_000;
const from = Date.UTC(2026, 8, 28);
const to = Date.UTC(2026, 10, 3);

const meter = (m: Partial<Meter> & Pick<Meter, "key" | "event_type" | "aggregation">): Meter => ({
  version: 1,
  applied_at: new Date(from).toISOString(),
  ...m,
});
const dims = { group_by: ["region", "tier"] };
const meters: Meter[] = [
  meter({ key: "calls", event_type: "api_call", aggregation: "count", ...dims }),
  meter({ key: "tokens", event_type: "api_call", aggregation: "sum", value_property: "tokens", ...dims }),
  meter({ key: "low", event_type: "api_call", aggregation: "min", value_property: "tokens", ...dims }),
  meter({ key: "high", event_type: "api_call", aggregation: "max", value_property: "tokens", ...dims }),
  meter({
    key: "users",
    event_type: "api_call",
    aggregation: "unique_count",
    value_property: "user",
    ...dims,
  }),
  meter({ key: "plan", event_type: "api_call", aggregation: "latest", value_property: "tier", ...dims }),
  meter({
    key: "eu_calls",
    event_type: "api_call",
    aggregation: "count",
    filters: [{ property: "region", in: ["eu", "o'x\\"] }],
    group_by: ["tier"],
  }),
];

const customers = ["acme", "o'brien\\", "ünï", "zeta"];

/** Events with times in [from, to), received `lag` after their time (plus jitter). */
function events(
  seed: number,
  n: number,
  prefix: string,
  received: (ts: number, r: () => number) => number,
): Row[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  return Array.from({ length: n }, (_, i) => {
    const ts = from + Math.floor(r() * (to - from));
    const props: Record<string, string> = { region: pick(["eu", "us", "o'x\\"]) };
    if (r() < 0.9) props.tokens = pick(["1", "2.5", "100", "0.000000001", "abc", "-3", "7.25"]);
    if (r() < 0.9) props.tier = pick(["free", "pro", "ent"]);
    if (r() < 0.8) props.user = `u${Math.floor(r() * 40)}`;
    return {
      customer: pick(customers),
      type: r() < 0.9 ? "api_call" : "other",
      ts,
      id: `${prefix}-${i}`,
      received: received(ts, r),
      props,
    };
  });
}

function insert(db: string, rows: readonly Row[]): string {
  const values = rows.map((e) => {
    const keys = Object.keys(e.props);
    return `(${[e.customer, e.type, e.ts, e.id, e.received, "sdk", keys, keys.map((k) => e.props[k]!)]
      .map((v) => lit(v))
      .join(", ")})`;
  });
  return `INSERT INTO ${sql.eventsTable(db)} (customer, type, ts, id, received, source, prop_keys, prop_values) VALUES ${values.join(", ")}`;
}

function recordRewrites(db: string, rows: readonly Row[]): string {
  return `INSERT INTO ${sql.rewritesTable(db)} (customer, type, ts, id, recorded_at) VALUES ${rows
    .map((e) => `(${[e.customer, e.type, e.ts, e.id].map((v) => lit(v)).join(", ")}, now())`)
    .join(", ")}`;
}

/** The subset of the ClickHouse client Tally's usage path calls, over chdb (a real engine). */
function chdbClient(c: Chdb): ClickHouseClient {
  return {
    query: async ({ query }: { query: string }) => {
      const rows = await c.rows(query);
      return { json: () => Promise.resolve(rows) };
    },
    command: async ({ query }: { query: string }) => {
      await c.exec(query);
      return {};
    },
  } as unknown as ClickHouseClient;
}

interface Engine {
  name: string;
  deps: UsageDeps;
  raw: UsageDeps;
  exec(q: string): Promise<void>;
}

let ch: ClickHouseClient;
let chdb: Chdb;
const engines: Engine[] = [];
let db: string;
let chConfig: unknown;

/** Receive hours: T1 filled first; T2 after late events arrive; the tail after T2 never filled. */
const T1 = Date.UTC(2026, 10, 1, 12);
const T2 = Date.UTC(2026, 10, 2, 18);
const settleMs = 0;

// Phase 1: everything received before T1 (on time, and some days late).
const early = events(1, 3000, "a", (ts, r) =>
  Math.min(T1 - 1, ts + (r() < 0.15 ? Math.floor(r() * 5 * DAY) : Math.floor(r() * 90_000))),
);
// Phase 2, after the first fill: late events for hours already filled, received in [T1, T2),
// and the open tail (received at or after T2).
const late = events(2, 600, "b", (_ts, r) => T1 + Math.floor(r() * (T2 - T1)));
const tail = events(3, 400, "c", (_ts, r) => T2 + Math.floor(r() * 5 * HOUR));

async function insertEverywhere(rows: readonly Row[], copies: readonly Row[]): Promise<void> {
  for (const e of engines) {
    await e.exec(insert(db, rows));
    if (copies.length > 0) {
      // Rewritten ids as the sink writes them: the record first, then an identical row; some
      // copies carry a later receive time (a retry re-written after a crash).
      await e.exec(recordRewrites(db, copies));
      await e.exec(insert(db, copies));
    }
  }
}

const copiesOf = (rows: readonly Row[], every: number, shift: number) =>
  rows
    .filter((_, i) => i % every === 0)
    .map((e, i) => ({ ...e, received: e.received + (i % 2 === 0 ? shift : 0) }));

beforeAll(async () => {
  const config = testConfig();
  db = config.clickhouse.database;
  chConfig = config.clickhouse;
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, db);
  chdb = await openChdb();
  await chdb.exec(sql.createDatabase(db));
  await chdb.exec(sql.createMigrationsTable(db));
  for (const m of migrations) for (const s of m.statements(db)) await chdb.exec(s);
  const wm = { current: () => Promise.resolve(T2 + 10 * HOUR) };
  const mk = (name: string, client: ClickHouseClient, exec: (q: string) => Promise<void>): Engine => ({
    name,
    deps: { clickhouse: client, database: db, watermarks: wm },
    raw: { clickhouse: client, database: db, watermarks: wm, rollups: "off" },
    exec,
  });
  engines.push(
    mk("ClickHouse 18.16", ch, async (q) => {
      await ch.command({ query: q });
    }),
    mk(`ClickHouse ${chdb.version} (chdb)`, chdbClient(chdb), (q) => chdb.exec(q)),
  );
  await insertEverywhere(early, copiesOf(early, 13, 2 * HOUR));
}, 60_000);

afterAll(async () => {
  await ch?.command({ query: `DROP DATABASE IF EXISTS ${db}` });
  await ch?.close();
  chdb?.close();
});

const zones = ["Europe/Berlin", "Australia/Adelaide", "Asia/Kathmandu", "UTC"] as const;
const windows: (WindowSize | undefined)[] = [undefined, "hour", "day", "month"];
const groupBys: string[][] = [[], ["region"], ["tier", "region"]];
const cuts: (number | undefined)[] = [undefined, T1 - 1, T1 + 5 * HOUR + 1234, T2 + 2 * HOUR];

/**
 * A deterministic spread of requests: every meter × every window, with the zone, group-by,
 * customer and cut rotating (28 requests; every zone, group-by and cut is hit by several).
 */
function requests(): UsageRequest[] {
  const out: UsageRequest[] = [];
  let i = 0;
  for (const m of meters) {
    for (const w of windows) {
      {
        i++;
        const tz = zones[(i + meters.indexOf(m)) % zones.length]!;
        const groupBy = groupBys[i % groupBys.length]!.filter((g) => (m.group_by ?? []).includes(g));
        const start = DateTime.fromMillis(Date.UTC(2026, 9, 1), { zone: tz }).startOf("month");
        out.push({
          meter: m,
          customer: i % 3 === 0 ? undefined : customers[i % customers.length],
          fromMs: start.toMillis(),
          toMs: start.plus({ months: 1 }).toMillis(),
          window: w,
          tz,
          groupBy,
          receivedUpToMs: cuts[i % cuts.length],
        });
      }
    }
  }
  return out;
}

async function expectSameAsRaw(e: Engine): Promise<number> {
  let rows = 0;
  for (const req of requests()) {
    const [got, want] = await Promise.all([queryUsage(e.deps, req), queryUsage(e.raw, req)]);
    expect(
      got,
      `${e.name}: ${req.meter.key} ${req.window ?? "none"} ${req.tz} ${JSON.stringify(req.groupBy)} cut ${req.receivedUpToMs}`,
    ).toEqual(want);
    rows += want.data.filter((r) => r.value !== "0" && r.value !== null).length;
  }
  return rows;
}

async function expectTotalsSameAsRaw(e: Engine): Promise<void> {
  for (const receivedUpToMs of cuts) {
    const req = { meters, fromMs: Date.UTC(2026, 9, 1), toMs: Date.UTC(2026, 10, 1), receivedUpToMs };
    const [got, want] = await Promise.all([queryTotals(e.deps, req), queryTotals(e.raw, req)]);
    expect(got.totals, `${e.name} totals cut ${receivedUpToMs}`).toEqual(want.totals);
    expect(want.totals.every((t) => t.size > 0)).toBe(true);
  }
}

describe("usage rollup", () => {
  it("equals the raw path after the first fill, on 18.16 and on 26", async () => {
    for (const e of engines) {
      for (const m of meters) {
        expect(await readChain(e.deps.clickhouse, db, m)).toBeNull();
        const out = await fillRollup(e.deps, m, { watermarkMs: T1 + 30 * 60_000, settleMs });
        expect(out).toMatchObject({ kind: "filled", fromMs: 0, toMs: T1 });
      }
      expect(await expectSameAsRaw(e)).toBeGreaterThan(500);
      await expectTotalsSameAsRaw(e);
    }
  }, 240_000);

  it("stays equal when late events land in hours already filled, and after the next fill", async () => {
    await insertEverywhere([...late, ...tail], copiesOf(late, 11, HOUR));
    for (const e of engines) {
      // Late events are in the open tail (received after the horizon) until the next fill.
      await expectSameAsRaw(e);
      for (const m of meters) {
        const out = await fillRollup(e.deps, m, { watermarkMs: T2 + 59 * 60_000, settleMs });
        expect(out).toMatchObject({ kind: "filled", fromMs: T1, toMs: T2 });
        expect((await readChain(e.deps.clickhouse, db, m))?.horizonMs).toBe(T2);
      }
      await expectSameAsRaw(e);
      await expectTotalsSameAsRaw(e);
    }
  }, 240_000);

  it("reads the rollup for closed hours (a row slipped into a filled hour is not seen by it)", async () => {
    // Not something the sink can do (the watermark covers filled hours): it shows the answer
    // really comes from the rollup, so the equality above is not raw compared with raw.
    const ghost: Row = {
      customer: "acme",
      type: "api_call",
      ts: Date.UTC(2026, 9, 10),
      id: "ghost",
      received: T1 - HOUR,
      props: { region: "eu" },
    };
    const req: UsageRequest = {
      meter: meters[0]!,
      customer: "acme",
      fromMs: Date.UTC(2026, 9, 1),
      toMs: Date.UTC(2026, 10, 1),
    };
    for (const e of engines) {
      const before = await queryUsage(e.deps, req);
      await e.exec(insert(db, [ghost]));
      const raw = await queryUsage(e.raw, req);
      const rolled = await queryUsage(e.deps, req);
      expect(Number(raw.data[0]!.value)).toBe(Number(before.data[0]!.value) + 1);
      expect(rolled.data[0]!.value).toBe(before.data[0]!.value);
      await e.exec(`ALTER TABLE ${sql.eventsTable(db)} DELETE WHERE id = 'ghost'`);
    }
  }, 60_000);

  it("a crashed fill (rows written, not recorded) is never read; the next fill covers the same hours once", async () => {
    const m = { ...meters[1]!, version: 7 };
    const req: UsageRequest = {
      meter: m,
      fromMs: Date.UTC(2026, 9, 1),
      toMs: Date.UTC(2026, 10, 1),
      window: "day",
      tz: "Asia/Kathmandu",
      groupBy: ["region"],
    };
    for (const e of engines) {
      await expect(
        fillRollup(e.deps, m, {
          watermarkMs: T1,
          settleMs,
          beforeRecord: () => Promise.reject(new Error("crash")),
        }),
      ).rejects.toThrow("crash");
      expect(await readChain(e.deps.clickhouse, db, m)).toBeNull();
      expect(await queryUsage(e.deps, req)).toEqual(await queryUsage(e.raw, req));
      expect(await fillRollup(e.deps, m, { watermarkMs: T1, settleMs })).toMatchObject({
        kind: "filled",
        fromMs: 0,
      });
      expect(await queryUsage(e.deps, req)).toEqual(await queryUsage(e.raw, req));
      const [orphans] = await queryRows<{ n: string }>(
        e.deps.clickhouse,
        `SELECT toString(uniqExact(token)) AS n FROM ${db}.usage_rollup WHERE meter = 'tokens' AND meter_version = 7`,
      );
      expect(orphans!.n).toBe("2");
    }
  }, 60_000);

  it("a fill process SIGKILLed between writing its rows and recording them counts nothing", async () => {
    const m = { ...meters[3]!, version: 9 };
    const e = engines[0]!;
    const req: UsageRequest = {
      meter: m,
      fromMs: Date.UTC(2026, 9, 1),
      toMs: Date.UTC(2026, 10, 1),
      window: "hour",
      tz: "Asia/Kathmandu",
      groupBy: ["tier"],
    };
    const child = spawn(
      process.execPath,
      [
        "dist/test/fixtures/rollup-fill-child.js",
        JSON.stringify(chConfig),
        db,
        JSON.stringify(m),
        String(T2),
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    const exit = await new Promise<NodeJS.Signals | number | null>((r) =>
      child.once("exit", (code, sig) => r(sig ?? code)),
    );
    expect(exit).toBe("SIGKILL");
    const [written] = await queryRows<{ n: string }>(
      ch,
      `SELECT toString(count()) AS n FROM ${db}.usage_rollup WHERE meter = 'high' AND meter_version = 9`,
    );
    expect(Number(written!.n)).toBeGreaterThan(0);
    expect(await readChain(ch, db, m)).toBeNull();
    const raw = await queryUsage(e.raw, req);
    expect(await queryUsage(e.deps, req)).toEqual(raw);
    expect(await fillRollup(e.deps, m, { watermarkMs: T2, settleMs })).toMatchObject({
      kind: "filled",
      fromMs: 0,
      toMs: T2,
    });
    expect(await queryUsage(e.deps, req)).toEqual(raw);
  }, 60_000);

  it("a new meter version reads raw until its rollup is built, then the rollup", async () => {
    const v2 = { ...meters[4]!, version: 2, filters: [{ property: "tier", not_equals: "free" }] };
    const req: UsageRequest = {
      meter: v2,
      fromMs: Date.UTC(2026, 9, 1),
      toMs: Date.UTC(2026, 10, 1),
      window: "day",
      tz: "Australia/Adelaide",
      groupBy: ["tier"],
    };
    for (const e of engines) {
      expect(await readChain(e.deps.clickhouse, db, v2)).toBeNull();
      const raw = await queryUsage(e.raw, req);
      expect(await queryUsage(e.deps, req)).toEqual(raw);
      await fillRollup(e.deps, v2, { watermarkMs: T2, settleMs });
      expect((await readChain(e.deps.clickhouse, db, v2))?.horizonMs).toBe(T2);
      expect(await queryUsage(e.deps, req)).toEqual(raw);
    }
  }, 60_000);

  it("builds a history in bounded units (a unit per few receive hours), every step equal to the raw path", async () => {
    // A new version of the sum meter, filled 500 rows per unit: many units, each recorded, the
    // chain growing unit by unit; reads in between take the newest units' end as the horizon.
    const v3 = { ...meters[1]!, version: 3 };
    const req: UsageRequest = {
      meter: v3,
      fromMs: Date.UTC(2026, 9, 1),
      toMs: Date.UTC(2026, 10, 3),
      window: "day",
      tz: "Asia/Kathmandu",
      groupBy: ["region"],
    };
    for (const e of engines) {
      const raw = await queryUsage(e.raw, req);
      let units = 0;
      for (;;) {
        const out = await fillRollup(e.deps, v3, { watermarkMs: T2, settleMs, maxUnitEvents: 500 });
        if (out.kind !== "filled") break;
        units++;
        expect((await readChain(e.deps.clickhouse, db, v3))?.horizonMs).toBe(out.toMs);
        if (units % 3 === 1)
          expect(await queryUsage(e.deps, req), `${e.name} after unit ${units}`).toEqual(raw);
        if (!out.more) {
          expect(out.toMs).toBe(T2);
          break;
        }
      }
      expect(units).toBeGreaterThan(5);
      expect(await queryUsage(e.deps, req)).toEqual(raw);
      expect(await queryTotals(e.deps, { meters: [v3], fromMs: req.fromMs, toMs: req.toMs })).toEqual(
        await queryTotals(e.raw, { meters: [v3], fromMs: req.fromMs, toMs: req.toMs }),
      );
    }
  }, 120_000);
});
