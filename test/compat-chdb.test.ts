import Big from "big.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createClickHouse,
  ident,
  lit,
  migrations,
  queryRows,
  sql,
  usageAggregate,
  usageGaugeBuckets,
  usageGaugeCarryIn,
  usageGaugePoints,
  usageTotals,
  type ClickHouseClient,
  type EventFilter,
  type SqlAggregation,
  type SqlValue,
  type UsageFilter,
  type UsageSpec,
} from "../src/clickhouse/index.js";
import { openChdb, type Chdb } from "./chdb.js";
import { testConfig } from "./helpers.js";

// DESIGN.md "ClickHouse dialect": Tally's SQL is written in the common subset of the Debian
// ClickHouse 18.16 server and current ClickHouse (26.x). This test runs the same DDL, the same
// inserts and the same statement builders on both, the real 18.16 server of the test run and
// ClickHouse 26 embedded through chdb, and requires identical results. A statement either engine
// rejects fails the test with that engine's exact error.
//
// Known formatting difference, normalised below: toString(Decimal128(9)) pads to the scale on
// 18.16 ("100.000000000") and drops trailing zeros on 26 ("100"); sums are compared with big.js.

interface Engine {
  name: string;
  exec(query: string): Promise<void>;
  rows<T>(query: string): Promise<T[]>;
}

let ch: ClickHouseClient;
let chdb: Chdb;
let db: string;
let engines: readonly [Engine, Engine];

/** Runs one statement, turning a rejection into an error that names the engine and the SQL. */
async function run<T>(engine: Engine, query: string, kind: "exec" | "rows"): Promise<T[]> {
  try {
    if (kind === "exec") {
      await engine.exec(query);
      return [];
    }
    return await engine.rows<T>(query);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(
      `${engine.name} rejected a statement Tally runs:\n${query.slice(0, 2000)}\n--> ${message}`,
      {
        cause: err,
      },
    );
  }
}

async function execBoth(query: string): Promise<void> {
  for (const e of engines) await run(e, query, "exec");
}

/** The rows of one query on 18.16 and on 26. */
async function rowsBoth<T = Record<string, unknown>>(query: string): Promise<[T[], T[]]> {
  const [a, b] = engines;
  return Promise.all([run<T>(a, query, "rows"), run<T>(b, query, "rows")]);
}

/** Asserts both engines return the same rows (optionally normalised first); returns them. */
async function expectSame<T = Record<string, unknown>, R = T[]>(
  query: string,
  normalise: (rows: T[]) => R = (rows) => rows as R,
): Promise<R> {
  const [old, current] = await rowsBoth<T>(query);
  expect(normalise(current), `ClickHouse 26 and 18.16 differ on:\n${query}`).toEqual(normalise(old));
  return normalise(old);
}

const byId = <T extends { id: string }>(rows: T[]) => [...rows].sort((a, b) => (a.id < b.id ? -1 : 1));

const hostile = [
  "",
  "'",
  "\\",
  "trailing\\",
  "\\'",
  "'; DROP TABLE events; --",
  "' OR '1'='1",
  "{x:String}",
  "$1 ?",
  "nul\0tab\tcr\rlf\n\x01\x1f\x7f",
  "😀 e\u0301 \u202Eevil \u05E9\u05DC\u05D5\u05DD \u{10FFFF}",
];
const customers = ["acme", "globex", ...hostile];
const types = ["api_call", "tokens"];
const base = Date.UTC(2026, 0, 1); // 2026-01-01T00:00:00Z
const day = 86_400_000;

interface EventRow {
  customer: string;
  type: string;
  ts: number;
  id: string;
  received: number;
  source: string;
  prop_keys: string[];
  prop_values: string[];
}

function event(
  customer: string,
  type: string,
  ts: number,
  id: string,
  props: Record<string, string>,
): EventRow {
  return {
    customer,
    type,
    ts,
    id,
    received: ts + 250,
    source: "compat",
    prop_keys: Object.keys(props),
    prop_values: Object.values(props),
  };
}

// Jan to Mar (three monthly partitions), not in time order.
const dayOffsets = [0, 17, 34, 45, 62, 5];
/** Six events per customer, with hostile customers, ids and property names. */
const events: EventRow[] = customers.flatMap((c, ci) =>
  Array.from({ length: 6 }, (_, k) =>
    event(c, types[k % 2]!, base + dayOffsets[k]! * day + ci * 1000, `${ci}-${k}-${c}`, {
      tokens: `${k}.${ci}5`,
      [c]: "2.5",
      label: c,
    }),
  ),
);
// Same (customer, type, ts): ordering and keyset pagination fall back to the id.
const ties = ["tie-a", "tie-b", "tie-c", "tie-'", "tie-\\"].map((id) =>
  event("acme", "api_call", base + 3 * day, id, { tokens: "1" }),
);
// 1000 x 0.1 must sum to exactly 100: a Float64 sum would not.
const tenths = Array.from({ length: 1000 }, (_, k) =>
  event("sum", "tick", base + k, `sum-${k}`, { amount: "0.1" }),
);
// Near the top of what both engines print correctly (see the large-sum test).
const large = Array.from({ length: 5 }, (_, k) =>
  event("large", "tick", base + k, `large-${k}`, { amount: "99999999999999999999.999999999" }),
);

function insertEvents(rows: readonly EventRow[]): string {
  const values = rows.map(
    (r) =>
      `(${[r.customer, r.type, r.ts, r.id, r.received, r.source, r.prop_keys, r.prop_values].map((v) => lit(v)).join(", ")})`,
  );
  return `INSERT INTO ${sql.eventsTable(db)} (customer, type, ts, id, received, source, prop_keys, prop_values) VALUES ${values.join(", ")}`;
}

/** Rewrite records (`event_rewrites`) for rows about to be written a second time. */
function insertRewrites(rows: readonly EventRow[]): string {
  const values = rows.map(
    (r) => `(${[r.customer, r.type, r.ts, r.id].map((v) => lit(v)).join(", ")}, now())`,
  );
  return `INSERT INTO ${sql.rewritesTable(db)} (customer, type, ts, id, recorded_at) VALUES ${values.join(", ")}`;
}

beforeAll(async () => {
  const config = testConfig();
  db = config.clickhouse.database;
  ch = createClickHouse(config.clickhouse);
  chdb = await openChdb();
  engines = [
    {
      name: "ClickHouse 18.16 (server)",
      exec: async (query) => {
        await ch.command({ query });
      },
      rows: (query) => queryRows(ch, query),
    },
    { name: `ClickHouse ${chdb.version} (chdb)`, exec: (q) => chdb.exec(q), rows: (q) => chdb.rows(q) },
  ];

  // The same DDL on both, twice (every statement must be idempotent), then the migration records.
  for (let pass = 0; pass < 2; pass++) {
    await execBoth(sql.createDatabase(db));
    await execBoth(sql.createMigrationsTable(db));
    for (const m of migrations) for (const statement of m.statements(db)) await execBoth(statement);
  }
  for (const m of migrations) await execBoth(sql.recordMigration(db, m));

  // The same rows on both, as INSERT ... VALUES rendered with lit().
  await execBoth(insertEvents(events));
  await execBoth(insertEvents(ties));
  await execBoth(insertEvents(events.slice(0, 7))); // copies, as a crash between insert and ack writes
  await execBoth(insertEvents(tenths));
  await execBoth(insertEvents(large));
  const [cols, cols26] = await rowsBoth<{ name: string; type: string }>(
    `DESCRIBE TABLE ${sql.ledgerTable(db)}`,
  );
  expect(cols26.map((c) => [c.name, c.type])).toEqual(cols.map((c) => [c.name, c.type]));
  const ledger = events.slice(0, 20).map((e, k) => {
    const row: Record<string, SqlValue> = {
      id: e.id,
      customer: e.customer,
      type: e.type,
      ts: e.ts,
      fp: `fp-${k}-${e.customer}`,
      bus_partition: k % 3,
      seen_day: k % 2 === 0 ? "2026-01-01" : "2026-01-02",
    };
    const value = (name: string) =>
      row[name] ?? fail(`the compat test has no value for ledger column ${name}`);
    return `(${cols.map((c) => lit(value(c.name))).join(", ")})`;
  });
  await execBoth(
    `INSERT INTO ${sql.ledgerTable(db)} (${cols.map((c) => ident(c.name)).join(", ")}) VALUES ${ledger.join(", ")}`,
  );
});
afterAll(async () => {
  await ch?.command({ query: `DROP DATABASE IF EXISTS ${ident(db)}` });
  await ch?.close();
  chdb?.close();
});

describe("the same schema on 18.16 and 26 (happy)", () => {
  it("runs on ClickHouse 18.16 and 26", async () => {
    expect(chdb.version).toMatch(/^26\./);
    const [server] = await rowsBoth<{ v: string }>("SELECT version() AS v");
    expect(server[0]!.v).toMatch(/^18\.16\./);
  });

  it("records the same migrations", async () => {
    const versions = await expectSame<{ version: number }>(sql.appliedVersions(db));
    expect(versions).toEqual(migrations.map((m) => ({ version: m.version })));
    const latest = await expectSame<{ version: number | string }, number[]>(sql.schemaVersion(db), (rows) =>
      rows.map((r) => Number(r.version)),
    );
    expect(latest).toEqual([migrations[migrations.length - 1]!.version]);
  });

  it("creates the same tables, columns, keys and engines", async () => {
    await expectSame(
      `SELECT table, name, type, is_in_partition_key, is_in_sorting_key, is_in_primary_key
FROM system.columns WHERE database = ${lit(db)} ORDER BY table, name`,
    );
    await expectSame(
      `SELECT name, engine, partition_key, sorting_key, primary_key FROM system.tables WHERE database = ${lit(db)} ORDER BY name`,
    );
  });

  it("stores the same rows", async () => {
    const all = await expectSame(`SELECT toString(count()) AS n FROM ${sql.eventsTable(db)}`);
    expect(all).toEqual([{ n: String(events.length + 7 + ties.length + tenths.length + large.length) }]);
  });

  it("hostile literals select back identically", async () => {
    const rows = await expectSame(
      `SELECT ${lit(hostile)} AS v, ${lit(hostile.map((h) => [h, h]))} AS nested`,
    );
    expect(rows).toEqual([{ v: hostile, nested: hostile.map((h) => [h, h]) }]);
  });
});

describe("the same answers from the statement builders (happy)", () => {
  const filters: EventFilter[] = [
    {},
    { customer: "acme" },
    ...hostile.map((customer) => ({ customer })),
    { type: "tokens" },
    { customer: "globex", type: "api_call" },
    { fromMs: base + 20 * day, toMs: Date.UTC(2026, 2, 1) },
    { customer: "acme", fromMs: base, toMs: base + 3 * day + 1 },
    { customer: "nobody' OR '1'='1" },
  ];

  it.each(filters.map((f) => [JSON.stringify(f), f] as const))("countEvents %s", async (_, f) => {
    await expectSame(sql.countEvents(db, f));
  });

  it("countEvents counts distinct ids", async () => {
    const rows = await expectSame(sql.countEvents(db, {}));
    expect(rows).toEqual([{ count: String(events.length + ties.length + tenths.length + large.length) }]);
  });

  it.each(filters.map((f) => [JSON.stringify(f), f] as const))(
    "listEvents %s, every page of 4",
    async (_, f) => {
      let after: { ts: number; id: string } | undefined;
      const seen: string[] = [];
      for (let page = 0; page < 500; page++) {
        const rows = await expectSame<{ id: string; ts_ms: string }>(sql.listEvents(db, f, 4, after));
        seen.push(...rows.map((r) => r.id));
        if (rows.length < 4) break;
        const last = rows[rows.length - 1]!;
        after = { ts: Number(last.ts_ms), id: last.id };
      }
      expect(new Set(seen).size).toBe(seen.length);
      const [count] = await expectSame<{ count: string }>(sql.countEvents(db, f));
      expect(seen.length).toBe(Number(count!.count));
    },
  );

  it("listEvents orders ties on (ts, id) the same way and keeps one copy per id", async () => {
    const rows = await expectSame<{ id: string }>(sql.listEvents(db, { customer: "acme" }, 100));
    expect(rows.filter((r) => r.id.startsWith("tie-")).map((r) => r.id)).toEqual(
      ["tie-c", "tie-b", "tie-a", "tie-\\", "tie-'"], // byte order, descending
    );
  });

  const sums: [string, EventFilter, string][] = [
    ["tokens, all", {}, "tokens"],
    ["tokens, acme", { customer: "acme" }, "tokens"],
    [
      "tokens, tokens type, Feb",
      { type: "tokens", fromMs: Date.UTC(2026, 1, 1), toMs: Date.UTC(2026, 2, 1) },
      "tokens",
    ],
    ...hostile.map((h): [string, EventFilter, string] => [
      `hostile property ${JSON.stringify(h)}`,
      { customer: h },
      h,
    ]),
    ["missing property", {}, "no such property"],
  ];
  const decimal = (rows: { sum: string; events: string }[]) =>
    rows.map((r) => ({ sum: new Big(r.sum).toString(), events: r.events }));

  it.each(sums)("sumProperty %s", async (_, f, property) => {
    await expectSame(sql.sumProperty(db, f, property), decimal);
  });

  it("sumProperty: 1000 x 0.1 is exactly 100 on both", async () => {
    const [old, current] = await rowsBoth<{ sum: string; events: string }>(
      sql.sumProperty(db, { customer: "sum" }, "amount"),
    );
    for (const rows of [old, current]) {
      expect(rows).toHaveLength(1);
      expect(rows[0]!.sum).toMatch(/^\d+(\.\d+)?$/);
      expect(new Big(rows[0]!.sum).eq(100)).toBe(true);
      expect(rows[0]!.events).toBe("1000");
    }
    // The formatting difference this file normalises (see the top comment).
    expect([old[0]!.sum, current[0]!.sum]).toEqual(["100.000000000", "100"]);
  });

  it("sumProperty: large sums stay exact on both", async () => {
    // NOTE: 18.16's toString(Decimal128) corrupts values >= 1e21 (it prints NUL bytes in place of
    // digits, e.g. 1e21 -> "1\u000000000000000000000000.000000000"); this sum stays just below.
    const rows = await expectSame(sql.sumProperty(db, { customer: "large" }, "amount"), decimal);
    expect(rows).toEqual([{ sum: "499999999999999999999.999999995", events: "5" }]);
  });

  it("ledgerLookup returns the same ledger rows", async () => {
    const ids = [...events.slice(0, 25).map((e) => e.id), "' OR 1=1 --", "missing"];
    const rows = await expectSame<{ id: string }>(sql.ledgerLookup(db, ids), byId);
    expect(rows.map((r) => r.id)).toEqual(byId(events.slice(0, 20)).map((e) => e.id));
  });

  it("ledger partitions list and drop the same way", async () => {
    const parts = await expectSame<{ partition: string }, string[]>(sql.ledgerPartitions(db), (rows) =>
      rows.map((r) => r.partition).sort(),
    );
    expect(parts).toEqual(["2026-01-01", "2026-01-02"]);
    await execBoth(sql.dropLedgerPartition(db, parts[0]!));
    await expectSame(sql.ledgerPartitions(db));
    const ids = events.slice(0, 20).map((e) => e.id);
    const rows = await expectSame<{ id: string }>(sql.ledgerLookup(db, ids), byId);
    expect(rows.map((r) => r.id)).toEqual(
      byId(events.slice(0, 20).filter((_, k) => k % 2 === 1)).map((e) => e.id),
    );
  });
});

describe("edge inputs of the statement builders (error)", () => {
  it("ledgerLookup with no ids is valid on both and finds nothing", async () => {
    // A caller that filters every id out before the lookup must not get a syntax error on 18.16.
    const rows = await expectSame(sql.ledgerLookup(db, []));
    expect(rows).toEqual([]);
  });
});

describe("property values that are not plain decimals (error)", () => {
  // sumProperty parses property values with toDecimal128(value, 9). Both engines must treat the
  // same values the same way, or a bill would depend on the server version.
  const odd = ["abc", "1,5", "1.5abc", " 1", "", "0.0000000001", "1e3", "+1", ".5"];

  it("sumProperty gives the same result or the same error code for each value on both", async () => {
    await execBoth(insertEvents(odd.map((v, k) => event(`odd-${k}`, "tick", base, `odd-${k}`, { qty: v }))));
    const outcome = async (engine: Engine, k: number): Promise<string> => {
      try {
        const rows = await engine.rows<{ sum: string }>(sql.sumProperty(db, { customer: `odd-${k}` }, "qty"));
        return `sum ${new Big(rows[0]!.sum).toString()}`;
      } catch (err) {
        return `error ${/Code: (\d+)/.exec(String(err))?.[1] ?? String(err)}`;
      }
    };
    const results = [];
    for (const [k, value] of odd.entries()) {
      results.push({ value, "18.16": await outcome(engines[0], k), "26": await outcome(engines[1], k) });
    }
    const differing = results.filter((r) => r["18.16"] !== r["26"]);
    expect(differing, "sumProperty parses these property values differently on 18.16 and 26").toEqual([]);
  });
});

describe("usage queries (happy)", () => {
  // The usage API's aggregations run in ClickHouse (usageAggregate, usageGaugePoints,
  // usageGaugeCarryIn). Both engines must put every event in the same window of a time zone,
  // apply filters and groups the same way, parse the same values as decimals and collapse the
  // same copies, or a customer's usage would depend on the server version.
  const utc = Date.UTC;
  const sec = (ms: number) => String(ms / 1000);
  const uType = "u_api";
  const hostileCustomer = "o'hara\\\n";
  const model = "it's\\model"; // a hostile property name, used as a group dimension
  const amounts = [
    "0.1",
    "-3.5",
    "12345678901234567890.123456789",
    "abc",
    "1e5",
    " 1",
    "7",
    "",
    "0.000000001",
    "-0",
    "1.0000000001", // ten decimals: not a plain decimal
    "+2",
    ".5",
    "0.1",
    "2.5",
    "1.",
  ];
  /** Instants around month starts (UTC, Berlin, Kolkata, Kathmandu) and both Berlin DST changes. */
  const instants = [
    utc(2026, 0, 10, 12), // before every range: carried in
    utc(2026, 0, 20), // the start of the wide range
    utc(2026, 0, 31, 23, 59, 59, 999),
    utc(2026, 1, 1),
    utc(2026, 1, 28, 22, 59, 59, 999), // Berlin Feb 28 23:59:59.999
    utc(2026, 1, 28, 23), // Berlin Mar 1 00:00
    utc(2026, 2, 28, 22, 59, 59), // Berlin Mar 28 23:59:59 CET
    utc(2026, 2, 28, 23), // Berlin Mar 29 00:00 CET
    utc(2026, 2, 29, 0, 59, 59, 999), // Berlin 01:59:59.999 CET, just before spring forward
    utc(2026, 2, 29, 1), // Berlin 03:00 CEST
    utc(2026, 2, 29, 1, 30),
    utc(2026, 2, 29, 21, 59, 59), // Berlin Mar 29 23:59:59 CEST
    utc(2026, 2, 29, 22), // Berlin Mar 30 00:00 CEST
    utc(2026, 2, 31, 22), // Berlin Apr 1 00:00
    utc(2026, 3, 30, 18, 29, 59), // Kolkata Apr 30 23:59:59
    utc(2026, 3, 30, 18, 30), // Kolkata May 1 00:00
    utc(2026, 4, 31, 18, 14, 59, 500), // Kathmandu May 31 23:59:59.5
    utc(2026, 4, 31, 18, 15), // Kathmandu Jun 1 00:00
    utc(2026, 5, 15, 4, 14, 59), // Kathmandu 09:59:59
    utc(2026, 5, 15, 4, 15), // Kathmandu 10:00, Kolkata 09:45
    utc(2026, 5, 15, 4, 30), // Kolkata 10:00
    utc(2026, 9, 24, 21, 59, 59), // Berlin Oct 24 23:59:59 CEST
    utc(2026, 9, 24, 22), // Berlin Oct 25 00:00 CEST
    utc(2026, 9, 25, 0, 30), // Berlin 02:30 CEST, the first 02:30
    utc(2026, 9, 25, 0, 59, 59, 999),
    utc(2026, 9, 25, 1), // Berlin 02:00 CET, the second 02:00
    utc(2026, 9, 25, 1, 30), // Berlin 02:30 CET, the second 02:30
    utc(2026, 9, 25, 22, 59, 59), // Berlin Oct 25 23:59:59 CET
    utc(2026, 9, 25, 23), // Berlin Oct 26 00:00
    utc(2026, 9, 31, 22, 59, 59, 999), // Berlin Oct 31 23:59:59.999
    utc(2026, 9, 31, 23), // Berlin Nov 1 00:00
    utc(2026, 10, 1), // the (exclusive) end of the wide range
  ];
  const ranges = [
    { fromMs: utc(2026, 0, 20), toMs: utc(2026, 10, 1) },
    { fromMs: utc(2026, 2, 29, 0, 59, 59, 999), toMs: utc(2026, 9, 25, 1) },
  ];

  let n = 0;
  const grid: EventRow[] = ["acme", "globex", hostileCustomer].flatMap((c, ci) =>
    instants.flatMap((ts, ti) => {
      if ((ti + ci) % 5 === 4) return [];
      const k = n++;
      const props: Record<string, string> = {};
      if (k % 7 !== 3) props.amount = amounts[k % amounts.length]!;
      if (k % 5 !== 2) props.region = ["eu", "us", "", "ap"][k % 4]!;
      if (k % 3 !== 1) props[model] = ["gpt", "claude"][k % 2]!;
      if (k % 4 !== 0) props.tier = ["free", "pro", "ent"][k % 3]!;
      return [event(c, uType, ts, `u'${ci}\\${ti}`, props)];
    }),
  );
  // The same instant for three events of one customer: `latest` breaks the tie on the id.
  const ties = ["tie-b", "tie-a", "tie-c"].map((id, k) =>
    event("acme", uType, utc(2026, 5, 1, 12), id, { amount: String(k + 1), region: "eu", tier: "pro" }),
  );
  // Absolute values: 70 x 0.1 in the Berlin day of the spring-forward change (23 hours), one
  // event just outside each end of it, events in both 02:xx hours of the fall-back change, and at
  // Kolkata's and Kathmandu's month and hour boundaries.
  const berlinMar29 = utc(2026, 2, 28, 23);
  const berlinMar30 = utc(2026, 2, 29, 22);
  const tenths = [...Array.from({ length: 69 }, (_, k) => berlinMar29 + k * 1_183_000), berlinMar30 - 1].map(
    (ts, k) => event("abs", uType, ts, `abs-${k}`, { amount: "0.1" }),
  );
  const abs = [
    ...tenths,
    event("abs", uType, berlinMar29 - 1, "abs-before", { amount: "0.1" }),
    event("abs", uType, berlinMar30, "abs-after", { amount: "0.1" }),
    event("abs", uType, utc(2026, 9, 25, 0, 30), "abs-fall-1", { amount: "1" }),
    event("abs", uType, utc(2026, 9, 25, 0, 59, 59, 999), "abs-fall-2", { amount: "2" }),
    event("abs", uType, utc(2026, 9, 25, 1, 30), "abs-fall-3", { amount: "4" }),
    event("abs", uType, utc(2026, 3, 30, 18, 29, 59), "abs-kolkata-1", { amount: "1" }),
    event("abs", uType, utc(2026, 3, 30, 18, 30), "abs-kolkata-2", { amount: "1" }),
    event("abs", uType, utc(2026, 5, 15, 4, 14, 59), "abs-kathmandu-1", { amount: "1" }),
    event("abs", uType, utc(2026, 5, 15, 4, 15), "abs-kathmandu-2", { amount: "1" }),
    // The extremes of a plain decimal; the sum stays below 1e21 (see the large-sum test).
    event("abs", uType, utc(2026, 6, 1), "abs-max", { amount: "99999999999999999999.999999999" }),
    event("abs", uType, utc(2026, 6, 2), "abs-min", { amount: "-99999999999999999999.999999999" }),
  ];
  // One id written three times (identical copies, as a crash between insert and ack writes).
  const dup = event("dup", uType, utc(2026, 2, 29, 1, 15), "dup-1", { amount: "2.5", region: "eu" });
  // The same data under another type, which no spec reads.
  const noise = grid.map((e) => ({ ...e, type: "u_noise", id: `noise-${e.id}` }));

  beforeAll(async () => {
    await execBoth(insertEvents([...grid, ...ties, ...abs, dup, ...noise]));
    // The copies, each announced in event_rewrites first, as the sink does when it rewrites.
    const copies = [...grid.filter((_, k) => k % 3 === 0), ...tenths.slice(0, 10), dup];
    await execBoth(insertRewrites([...copies, ...ties]));
    await execBoth(insertEvents(copies));
    await execBoth(insertEvents([dup, ...ties]));
  });

  const filterSets: (readonly UsageFilter[])[] = [
    [],
    [{ property: "tier", op: "equals", value: "pro" }],
    [{ property: "tier", op: "not_equals", value: "pro" }],
    [{ property: "tier", op: "in", values: ["pro", "ent", "o'x\\"] }],
    [{ property: "tier", op: "not_in", values: ["pro", "free"] }],
    [{ property: "tier", op: "exists", value: true }],
    [{ property: "tier", op: "exists", value: false }],
    [
      { property: "region", op: "in", values: ["eu", ""] },
      { property: model, op: "not_equals", value: "gpt" },
      { property: "amount", op: "exists", value: true },
    ],
  ];
  const groupBys: (readonly string[])[] = [[], ["region"], ["region", model]];
  const buckets: UsageSpec["bucket"][] = [
    { size: "none", tz: "UTC" },
    ...(["minute", "hour", "day", "month"] as const).flatMap((size) =>
      ["UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu"].map((tz) => ({ size, tz })),
    ),
  ];
  const customersOf = [undefined, "acme"];
  const spec = (p: Partial<UsageSpec>): UsageSpec => ({
    eventType: uType,
    ...ranges[0]!,
    valueProperty: "amount",
    numeric: true,
    filters: [],
    groupBy: [],
    bucket: { size: "none", tz: "UTC" },
    ...p,
  });
  // Every customer choice x window x zone x grouping, each with one of the filter sets, numeric or
  // not, and one of the ranges in turn; then every filter set x numeric x customer choice.
  let i = 0;
  const specs: UsageSpec[] = [
    ...customersOf.flatMap((customer) =>
      buckets.flatMap((bucket) =>
        groupBys.map((groupBy) => {
          const k = i++;
          return spec({
            customer,
            bucket,
            groupBy,
            filters: filterSets[k % filterSets.length]!,
            numeric: Math.floor(k / filterSets.length) % 2 === 0,
            ...ranges[k % 3 === 2 ? 1 : 0]!,
          });
        }),
      ),
    ),
    ...filterSets.flatMap((filters) =>
      [true, false].flatMap((numeric) =>
        customersOf.map((customer) =>
          spec({
            customer,
            filters,
            numeric,
            groupBy: ["region"],
            bucket: { size: "day", tz: "Europe/Berlin" },
          }),
        ),
      ),
    ),
  ];
  const aggregations: SqlAggregation[] = ["count", "sum", "min", "max", "unique_count", "latest"];
  const decimalAggs = new Set<SqlAggregation>(["sum", "min", "max"]);

  type Row = Record<string, unknown>;
  const text = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
  const sortRows = (rows: Row[]) => rows.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  /** Decimal128 text → the shortest exact form (the 18.16 / 26 formatting difference). */
  const exact = (v: unknown) => new Big(text(v)).toFixed();
  const aggregateRows = (agg: SqlAggregation) => (rows: Row[]) =>
    sortRows(rows.map((r) => (decimalAggs.has(agg) ? { ...r, value: exact(r.value) } : r)));
  /** Gauge points: the (ts, id, v) triples of each row, in one order. */
  const pointRows = (rows: Row[]) =>
    sortRows(
      rows.map((r) => {
        const { ts, ids, vs, ...rest } = r as Row & { ts: string[]; ids: string[]; vs: string[] };
        expect([ids.length, vs.length]).toEqual([ts.length, ts.length]);
        const points = ts
          .map((t, k) => [t, ids[k]!, vs[k]!] as const)
          .sort((a, b) => Number(a[0]) - Number(b[0]) || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
        return { ...rest, points };
      }),
    );
  /** Gauge buckets: decimals in their shortest form; a bucket without valid values has no levels. */
  const gaugeBucketRows = (rows: Row[]) =>
    sortRows(
      rows.map((r) =>
        r.valid === "0"
          ? { ...r, t1: null, tk: null, lk: null, mx: null, inner_lo: exact(r.inner_lo) }
          : { ...r, mx: exact(r.mx), inner_lo: exact(r.inner_lo) },
      ),
    );
  const label = (s: UsageSpec) =>
    [
      s.customer === undefined ? "all customers" : s.customer,
      s.bucket.size === "none" ? "no window" : `${s.bucket.size} ${s.bucket.tz}`,
      `group [${s.groupBy.join(",")}]`,
      `filters ${JSON.stringify(s.filters)}`,
      s.numeric ? "numeric" : "text",
      `${new Date(s.fromMs).toISOString()}..${new Date(s.toMs).toISOString()}`,
    ].join(", ");

  it.each(specs.map((s) => [label(s), s] as const))("every aggregation and gauge query: %s", async (_, s) => {
    for (const agg of aggregations) {
      const aggSpec = agg === "count" ? { ...s, valueProperty: undefined } : s;
      const rows = await expectSame<Row>(usageAggregate(db, aggSpec, agg, 100_000), aggregateRows(agg));
      // Every spec of the matrix reads some events (an empty answer would compare equal).
      if (agg === "count") expect(rows.length).toBeGreaterThan(0);
    }
    await expectSame<Row>(usageGaugePoints(db, s, 100_000), pointRows);
    const bucketMs = { none: 86_400_000, minute: 60_000, hour: 1_800_000, day: 900_000, month: 3_600_000 };
    const buckets = await expectSame<Row>(
      usageGaugeBuckets(db, s, bucketMs[s.bucket.size], 86_400_000, 100_000),
      gaugeBucketRows,
    );
    if (s.numeric) expect(buckets.some((r) => r.valid !== "0")).toBe(true);
    await expectSame<Row>(usageGaugeCarryIn(db, s, 100_000), sortRows);
  });

  it("every filter of the matrix keeps some events and drops others", async () => {
    const all = spec({ customer: "acme" });
    const [[total]] = await rowsBoth<Row>(usageAggregate(db, all, "count", 10));
    for (const filters of filterSets.slice(1)) {
      const [[some]] = await rowsBoth<Row>(usageAggregate(db, { ...all, filters }, "count", 10));
      expect(Number(some!.value), JSON.stringify(filters)).toBeGreaterThan(0);
      expect(Number(some!.value), JSON.stringify(filters)).toBeLessThan(Number(total!.value));
    }
  });

  /** The rows of one query on each engine, after the same normalisation. */
  async function eachEngine(query: string, normalise: (rows: Row[]) => Row[] = sortRows): Promise<Row[][]> {
    const [old, current] = await rowsBoth<Row>(query);
    return [normalise(old), normalise(current)];
  }
  const absSpec = (p: Partial<UsageSpec>) => spec({ customer: "abs", ...p });

  it("counts the 23-hour Berlin day of the spring-forward change and sums 70 x 0.1 to exactly 7", async () => {
    const berlinDay = { size: "day", tz: "Europe/Berlin" } as const;
    const range = { fromMs: utc(2026, 2, 27, 23), toMs: utc(2026, 2, 30, 22) };
    for (const rows of await eachEngine(
      usageAggregate(db, absSpec({ ...range, bucket: berlinDay, valueProperty: undefined }), "count", 10),
    )) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        [sec(utc(2026, 2, 27, 23)), "1"],
        [sec(berlinMar29), "70"],
        [sec(berlinMar30), "1"],
      ]);
    }
    const [old, current] = await rowsBoth<Row>(
      usageAggregate(db, absSpec({ ...range, bucket: berlinDay }), "sum", 10),
    );
    const mar29 = (rows: Row[]) => rows.find((r) => r.bucket === sec(berlinMar29));
    expect([mar29(old)?.value, mar29(current)?.value]).toEqual(["7.000000000", "7"]);
    expect(mar29(old)).toMatchObject({ valid: "70", invalid: "0" });
  });

  it("keeps the two Berlin 02:00 hours of the fall-back change apart", async () => {
    const range = { fromMs: utc(2026, 9, 24, 22), toMs: utc(2026, 9, 25, 23) };
    for (const rows of await eachEngine(
      usageAggregate(db, absSpec({ ...range, bucket: { size: "hour", tz: "Europe/Berlin" } }), "sum", 10),
      aggregateRows("sum"),
    )) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        [sec(utc(2026, 9, 25, 0)), "3"],
        [sec(utc(2026, 9, 25, 1)), "4"],
      ]);
    }
    for (const rows of await eachEngine(
      usageAggregate(db, absSpec({ ...range, bucket: { size: "day", tz: "Europe/Berlin" } }), "count", 10),
    )) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([[sec(utc(2026, 9, 24, 22)), "3"]]);
    }
  });

  it("puts events in Kolkata and Kathmandu windows by their non-hour offsets", async () => {
    const range = { fromMs: utc(2026, 3, 1), toMs: utc(2026, 6, 1) };
    const q = (bucket: UsageSpec["bucket"]) =>
      eachEngine(usageAggregate(db, absSpec({ ...range, bucket, valueProperty: undefined }), "count", 10));
    for (const rows of await q({ size: "month", tz: "Asia/Kolkata" })) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        ["2026-04-01", "1"],
        ["2026-05-01", "1"],
        ["2026-06-01", "2"],
      ]);
    }
    for (const rows of await q({ size: "month", tz: "UTC" })) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        ["2026-04-01", "2"],
        ["2026-06-01", "2"],
      ]);
    }
    for (const rows of await q({ size: "hour", tz: "Asia/Kathmandu" })) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        [sec(utc(2026, 3, 30, 18, 15)), "2"],
        [sec(utc(2026, 5, 15, 3, 15)), "1"],
        [sec(utc(2026, 5, 15, 4, 15)), "1"],
      ]);
    }
    for (const rows of await q({ size: "hour", tz: "Asia/Kolkata" })) {
      expect(rows.map((r) => [r.bucket, r.value])).toEqual([
        [sec(utc(2026, 3, 30, 17, 30)), "1"],
        [sec(utc(2026, 3, 30, 18, 30)), "1"],
        [sec(utc(2026, 5, 15, 3, 30)), "2"],
      ]);
    }
  });

  it("collapsing only the recorded rewrites answers what collapsing every id answers, on both engines", async () => {
    // The production path (usage/query.ts) passes `recorded` when event_rewrites holds records
    // in scope and `none` when it holds none; both must equal the collapse-everything answer.
    const specs = [
      spec({ customer: "dup", groupBy: ["region"], bucket: { size: "hour", tz: "Europe/Berlin" } }),
      spec({ bucket: { size: "day", tz: "Europe/Berlin" }, groupBy: ["region"] }),
      spec({ customer: "acme", bucket: { size: "month", tz: "Asia/Kolkata" } }),
    ];
    for (const s of specs) {
      for (const agg of aggregations) {
        const aggSpec = agg === "count" ? { ...s, valueProperty: undefined, numeric: false } : s;
        const all = await eachEngine(
          usageAggregate(db, aggSpec, agg, 100_000, { kind: "all" }),
          aggregateRows(agg),
        );
        const recorded = await eachEngine(
          usageAggregate(db, aggSpec, agg, 100_000, { kind: "recorded" }),
          aggregateRows(agg),
        );
        expect(recorded, `${agg} ${JSON.stringify(s)}`).toEqual(all);
        expect(all[0]!.length).toBeGreaterThan(0);
      }
      const gaugeAll = await eachEngine(usageGaugePoints(db, s, 100_000, { kind: "all" }), pointRows);
      expect(await eachEngine(usageGaugePoints(db, s, 100_000, { kind: "recorded" }), pointRows)).toEqual(
        gaugeAll,
      );
    }
    // dup-1 was written three times (background merges may already have folded some copies).
    const dupCount = spec({ customer: "dup", valueProperty: undefined, numeric: false });
    for (const rows of await eachEngine(usageAggregate(db, dupCount, "count", 10, { kind: "recorded" }))) {
      expect(rows.map((r) => r.value)).toEqual(["1"]);
    }
  });

  it("usageTotals (the close's one-pass totals of several meters) answers the same on both engines, for each collapse", async () => {
    const base = spec({});
    const items = aggregations.map((agg, i) => {
      const filters = filterSets[i % filterSets.length]!;
      return agg === "count"
        ? { spec: { ...base, valueProperty: undefined, numeric: false, filters }, agg }
        : { spec: { ...base, numeric: decimalAggs.has(agg), filters }, agg };
    });
    const normalize = (rows: Row[]) =>
      sortRows(
        rows.map((r) => {
          const o: Row = { ...r };
          items.forEach((item, i) => {
            if (decimalAggs.has(item.agg)) o[`v${i}`] = exact(o[`v${i}`]);
          });
          return o;
        }),
      );
    for (const collapse of [{ kind: "all" }, { kind: "recorded" }, { kind: "none" }] as const) {
      const rows = await expectSame<Row>(usageTotals(db, items, collapse), normalize);
      expect(rows.length).toBeGreaterThan(0);
    }
  });

  it("counts a duplicated id once, in every query", async () => {
    const s = spec({ customer: "dup", groupBy: ["region"], bucket: { size: "hour", tz: "Europe/Berlin" } });
    const hour = sec(utc(2026, 2, 29, 1));
    for (const rows of await eachEngine(
      usageAggregate(db, { ...s, valueProperty: undefined, numeric: false }, "count", 10),
    )) {
      expect(rows).toEqual([{ u_g0: "eu", bucket: hour, value: "1", valid: "1", invalid: "0" }]);
    }
    for (const rows of await eachEngine(usageAggregate(db, s, "sum", 10), aggregateRows("sum"))) {
      expect(rows).toEqual([{ u_g0: "eu", bucket: hour, value: "2.5", valid: "1", invalid: "0" }]);
    }
    for (const rows of await eachEngine(usageAggregate(db, s, "unique_count", 10))) {
      expect(rows.map((r) => r.value)).toEqual(["1"]);
    }
    for (const rows of await eachEngine(usageGaugePoints(db, s, 10), pointRows)) {
      expect(rows).toEqual([{ u_g0: "eu", invalid: "0", points: [[String(dup.ts), "dup-1", "2.5"]] }]);
    }
    const later = { ...s, fromMs: utc(2026, 3, 1), toMs: utc(2026, 4, 1) };
    for (const rows of await eachEngine(usageGaugeCarryIn(db, later, 10))) {
      expect(rows.map((r) => [r.u_g0, r.ts, r.v, r.n])).toEqual([["eu", String(dup.ts), "2.5", "1"]]);
    }
  });

  it("breaks a tie on the instant by the id for latest, and counts values that are not plain decimals", async () => {
    const s = spec({ customer: "acme", fromMs: utc(2026, 5, 1), toMs: utc(2026, 5, 2) });
    for (const rows of await eachEngine(usageAggregate(db, s, "latest", 10))) {
      expect(rows).toEqual([{ bucket: "0", value: "3", valid: "3", invalid: "0" }]);
    }
    for (const rows of await eachEngine(usageAggregate(db, spec({ customer: "acme" }), "count", 10))) {
      const invalid = grid.filter(
        (e) =>
          e.customer === "acme" &&
          e.ts >= ranges[0]!.fromMs &&
          e.ts < ranges[0]!.toMs &&
          e.prop_keys.includes("amount") &&
          !/^-?[0-9]{1,20}(\.[0-9]{1,9})?$/.test(e.prop_values[e.prop_keys.indexOf("amount")]!),
      ).length;
      expect(invalid).toBeGreaterThan(3);
      expect(rows[0]!.invalid).toBe(String(invalid));
    }
  });
});

function fail(message: string): never {
  throw new Error(message);
}
