import Big from "big.js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createClickHouse,
  ident,
  isSchemaCurrent,
  latestSchemaVersion,
  lit,
  migrate,
  migrations,
  queryRows,
  schemaVersion,
  sql,
  type ClickHouseClient,
  type SqlValue,
} from "../src/clickhouse/index.js";
import { guid, testConfig } from "./helpers.js";

// Values reach SQL only through lit(); these tests send them to the real ClickHouse 18.16 server
// of the test run and check that every byte comes back, and that no value changes a query's shape.

const controls = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("");

/** ~100 KB of everything lit() has to escape, mixed with multi-byte text. */
const long = "ab'\\\"`\n\r\0\x7f é日😀\u202E;--".repeat(6000).slice(0, 100_000);

const hostile: readonly string[] = [
  "",
  "'",
  "''",
  '"',
  "`",
  "\\",
  "\\\\",
  "trailing backslash\\",
  "\\'",
  "'\\",
  "a'b\"c`d\\e",
  controls,
  "\x7f",
  "\0",
  "nul\0in\0the middle",
  "'; DROP TABLE x; --",
  "\\' OR 1=1 --",
  "' OR '1'='1",
  "1) OR (1=1",
  "x' UNION ALL SELECT name FROM system.tables --",
  "/* comment */",
  "-- comment",
  "{x:String}",
  "{x: String} {y:UInt8}",
  "$1",
  "?",
  ":name",
  "%s%d",
  "\\x41\\u0041\\0\\N",
  "NULL",
  "line1\nline2",
  "crlf\r\nend\r\n",
  "\u2028\u2029",
  "héllo wörld",
  "日本語テキスト",
  "😀🎉👩‍👩‍👧‍👦",
  "\u{1F600}\u{10FFFF}\u{1D11E}\u{20000}",
  "\u05E9\u05DC\u05D5\u05DD \u202Eevil\u202C \u0627\u0644\u0639\u0631\u0628\u064A\u0629",
  "e\u0301\u0308\u0323 Z\u0351\u036B\u0343\u036A\u0302\u036B",
  "\uFEFFbom",
  "\uFFFD\uFFFE\uFFFF",
  "\u0080\u009f",
  long,
];

/** A readable test name for a possibly unprintable, possibly huge value. */
function label(s: string): string {
  const j = JSON.stringify(s);
  return j.length > 40 ? `${j.slice(0, 37)}..." (${s.length} chars)` : j;
}

/** Strings the server can hand back: valid UTF-16 (no lone surrogates), as ClickHouse speaks UTF-8. */
function isWellFormed(s: string): boolean {
  return Buffer.from(s, "utf8").toString("utf8") === s;
}

/**
 * Units biased towards what breaks quoting, plus raw UTF-16 code units (which may be lone
 * surrogates, filtered out afterwards) and astral code points.
 */
const nastyUnit = fc.oneof(
  {
    arbitrary: fc.constantFrom("'", "\\", '"', "`", "\\'", "''", "\0", "\r\n", "{x:String}", "$1", "?", "--"),
    weight: 3,
  },
  { arbitrary: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), weight: 3 },
  { arbitrary: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), weight: 1 },
  { arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)), weight: 1 },
  { arbitrary: fc.string({ unit: "binary", maxLength: 4 }), weight: 2 },
);
const nastyString = fc.string({ unit: nastyUnit, maxLength: 40 }).filter(isWellFormed);

let ch: ClickHouseClient;
let db: string;

beforeAll(async () => {
  const config = testConfig();
  db = config.clickhouse.database;
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, db);
});
afterAll(async () => {
  await ch?.command({ query: `DROP DATABASE IF EXISTS ${ident(db)}` });
  await ch?.close();
});

async function selectValue(expr: string): Promise<unknown> {
  const rows = await queryRows<{ v: unknown }>(ch, `SELECT ${expr} AS v`);
  return rows[0]!.v;
}

describe("lit() round-trips through ClickHouse 18.16 (happy)", () => {
  it.each(hostile.map((s) => [label(s), s] as const))("string %s comes back unchanged", async (_, s) => {
    const rows = await queryRows<{ v: string; n: string }>(ch, `SELECT ${lit(s)} AS v, length(v) AS n`);
    expect(rows[0]!.v).toBe(s);
    // length() counts bytes on the server: proves it stored exactly these UTF-8 bytes.
    expect(Number(rows[0]!.n)).toBe(Buffer.byteLength(s, "utf8"));
  });

  it("all hostile strings together as one array literal", async () => {
    expect(await selectValue(lit(hostile))).toEqual(hostile);
  });

  it("property: arbitrary strings, arrays of them, round-trip byte-exactly", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(nastyString, { maxLength: 16 }), async (values) => {
        // The leading "" keeps the literal an Array(String) when `values` is empty.
        const rows = await queryRows<{ v: string[]; n: string[] }>(
          ch,
          `SELECT ${lit(["", ...values])} AS v, arrayMap(x -> length(x), v) AS n`,
        );
        expect(rows[0]!.v.slice(1)).toEqual(values);
        expect(rows[0]!.n.slice(1).map(Number)).toEqual(values.map((s) => Buffer.byteLength(s, "utf8")));
      }),
      { numRuns: 200 },
    );
  });

  it.each([
    0,
    1,
    -1,
    1.5,
    -2.25,
    0.1,
    1e-7,
    123456.789,
    1e21,
    2 ** 31,
    -(2 ** 31),
    Number.MAX_SAFE_INTEGER,
    -Number.MAX_SAFE_INTEGER,
  ])("number %s", async (n) => {
    expect(Number(await selectValue(lit(n)))).toBe(n);
  });

  it.each([0n, 1n, -1n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n])(
    "bigint %s keeps every digit",
    async (n) => {
      // 18.16 quotes 64-bit integers in JSON, so compare as text.
      expect(String(await selectValue(lit(n)))).toBe(n.toString());
    },
  );

  it("null and booleans", async () => {
    const rows = await queryRows<Record<string, unknown>>(
      ch,
      `SELECT ${lit(null)} AS n, ${lit(true)} AS t, ${lit(false)} AS f, isNull(${lit(null)}) AS isnull`,
    );
    expect(rows[0]).toEqual({ n: null, t: 1, f: 0, isnull: 1 });
  });

  it.each<[string, SqlValue]>([
    ["empty", []],
    ["numbers", [1, 2, 3]],
    ["strings with null", ["a", null, "b'"]],
    ["nested", [[1, 2], [3], []]],
    ["nested strings", [["'", "\\"], ["\0"]]],
    ["bigints", [1n, 2n ** 62n]],
  ])("array: %s", async (_, value) => {
    const v = await selectValue(lit(value));
    // 64-bit integers come back quoted; normalise to text on both sides.
    const text = (x: unknown): unknown =>
      Array.isArray(x) ? x.map(text) : typeof x === "bigint" || typeof x === "number" ? String(x) : x;
    expect(text(v)).toEqual(text(value));
  });

  it("ident() accepts plain identifiers and the server accepts what it renders", async () => {
    for (const name of ["events", "_x", "T1_ab", "a".repeat(64)]) {
      expect(ident(name)).toBe(`\`${name}\``);
    }
    const rows = await queryRows<{ n: string }>(
      ch,
      `SELECT toString(count()) AS n FROM ${ident(db)}.${ident("events")}`,
    );
    expect(rows).toEqual([{ n: "0" }]);
  });
});

describe("lit() and ident() (error)", () => {
  it.each([NaN, Infinity, -Infinity])("lit(%s) throws instead of emitting invalid SQL", (n) => {
    expect(() => lit(n)).toThrow(/non-finite/);
  });

  it("a non-finite number nested in an array throws", () => {
    expect(() => lit([1, [2, NaN]])).toThrow(/non-finite/);
  });

  it.each([
    "a;b",
    "a`b",
    "`a`",
    "a b",
    " a",
    "a\n",
    "",
    "1abc",
    "a-b",
    "a.b",
    "é",
    "日本",
    "a\0",
    "a".repeat(65),
    "x` ; DROP DATABASE default; --",
  ])("ident(%j) throws", (name) => {
    expect(() => ident(name)).toThrow(/invalid SQL identifier/);
  });

  it("statement builders validate the database name", () => {
    expect(() => sql.countEvents("x; DROP DATABASE default", {})).toThrow(/invalid SQL identifier/);
    expect(() => sql.createDatabase("a`b")).toThrow(/invalid SQL identifier/);
    expect(() => migrations[0]!.statements("db name")).toThrow(/invalid SQL identifier/);
  });
});

describe("lit() output shape (security)", () => {
  it("property: a rendered string is one quoted token with no raw quote, backslash or control byte", () => {
    // Every ' and \ inside is escaped and no control byte survives raw, so the literal cannot end early.
    // eslint-disable-next-line no-control-regex
    const token = /^'(?:[^'\\\x00-\x1f\x7f]|\\[^\n])*'$/u;
    fc.assert(
      fc.property(nastyString, (s) => {
        expect(lit(s)).toMatch(token);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("statement builders filter by hostile values (security)", () => {
  const ts = 1_767_225_600_000; // 2026-01-01T00:00:00Z
  /** A ledger row's text columns; ledgerLookup returns some of them (and ts as text). */
  const ledgerRow = (id: string, h: string, i: number) => ({ id, customer: h, type: h, fp: `fp${i}:${h}` });
  const probes = hostile.map((h, i) => ({
    h,
    i,
    // Two events per customer, same ts, so listEvents paginates on the (hostile) id.
    ids: [`${i}:a:${h}`, `${i}:b:${h}`],
  }));

  beforeAll(async () => {
    const events = probes.flatMap(({ h, i, ids }) =>
      ids.map((id) => ({
        customer: h,
        type: h,
        ts: ts + i,
        id,
        received: ts + i,
        source: h,
        prop_keys: [h, "raw"],
        prop_values: ["1.5", h],
      })),
    );
    const victims = [1, 2, 3].map((k) => ({
      customer: "victim",
      type: "api_call",
      ts,
      id: `victim-${k}`,
      received: ts,
      source: "sdk",
      prop_keys: ["n"],
      prop_values: ["1"],
    }));
    await ch.insert({ table: sql.eventsTable(db), values: [...events, ...victims], format: "JSONEachRow" });
    const ledger = probes.flatMap(({ h, i, ids }) =>
      ids.map((id) => ({ ...ledgerRow(id, h, i), ts: ts + i, bus_partition: i, seen_day: "2026-01-01" })),
    );
    await ch.insert({ table: sql.ledgerTable(db), values: ledger, format: "JSONEachRow" });
  });

  it.each(probes.map((p) => [label(p.h), p] as const))("customer %s", async (_, { h, i, ids }) => {
    const count = await queryRows<{ count: string }>(ch, sql.countEvents(db, { customer: h, type: h }));
    expect(count).toEqual([{ count: "2" }]);

    const expected = [...ids].sort().reverse();
    const page1 = await queryRows<Record<string, unknown>>(ch, sql.listEvents(db, { customer: h }, 1));
    expect(page1).toEqual([
      {
        id: expected[0],
        type: h,
        customer: h,
        ts_ms: String(ts + i),
        received_ms: String(ts + i),
        source: h,
        prop_keys: [h, "raw"],
        prop_values: ["1.5", h],
      },
    ]);
    const after = { ts: ts + i, id: expected[0]! };
    const page2 = await queryRows<{ id: string }>(ch, sql.listEvents(db, { customer: h }, 1, after));
    expect(page2.map((r) => r.id)).toEqual([expected[1]]);
    const page3 = await queryRows(
      ch,
      sql.listEvents(db, { customer: h }, 1, { ts: ts + i, id: expected[1]! }),
    );
    expect(page3).toEqual([]);

    const sum = await queryRows<{ sum: string; events: string }>(ch, sql.sumProperty(db, { customer: h }, h));
    expect(sum).toHaveLength(1);
    expect(new Big(sum[0]!.sum).eq(3)).toBe(true);
    expect(sum[0]!.events).toBe("2");

    const other = probes[(i + 1) % probes.length]!.ids[0]!;
    const ledger = await queryRows<Record<string, unknown>>(
      ch,
      sql.ledgerLookup(db, [ids[0]!, other, "' OR 1=1 --", `${ids[0]!}' OR '1'='1`]),
    );
    expect(ledger.map((r) => r.id).sort()).toEqual([ids[0], other].sort());
    const found = ledger.find((r) => r.id === ids[0])!;
    const known: Record<string, unknown> = { ...ledgerRow(ids[0]!, h, i), ts_ms: String(ts + i) };
    expect(Object.keys(found)).toContain("id");
    expect(found).toEqual(Object.fromEntries(Object.keys(found).map((k) => [k, known[k]])));
  });

  it.each([
    "victim' OR '1'='1",
    "nobody\\' OR 1=1 --",
    "' OR 1 --",
    "victim'; --",
    "victim\\",
    "victim\0",
    "VICTIM",
  ])("filter %j matches nothing", async (probe) => {
    expect(await queryRows(ch, sql.countEvents(db, { customer: probe }))).toEqual([{ count: "0" }]);
    expect(await queryRows(ch, sql.listEvents(db, { customer: probe }, 100))).toEqual([]);
    expect(await queryRows(ch, sql.ledgerLookup(db, [probe]))).toEqual([]);
  });

  it("the decoy's rows are reachable only through its own exact name", async () => {
    expect(await queryRows(ch, sql.countEvents(db, { customer: "victim" }))).toEqual([{ count: "3" }]);
    const all = await queryRows<{ count: string }>(ch, sql.countEvents(db, {}));
    expect(all).toEqual([{ count: String(probes.length * 2 + 3) }]);
  });
});

describe("migrate()", () => {
  it("applies every migration once, then nothing; the schema is current", async () => {
    const fresh = guid();
    try {
      expect(await schemaVersion(ch, fresh)).toBe(0);
      expect(await isSchemaCurrent(ch, fresh)).toBe(false);
      expect(await migrate(ch, fresh)).toEqual(migrations.map((m) => m.version));
      expect(await migrate(ch, fresh)).toEqual([]);
      expect(await schemaVersion(ch, fresh)).toBe(latestSchemaVersion);
      expect(await isSchemaCurrent(ch, fresh)).toBe(true);
      const recorded = await queryRows<{ version: number }>(
        ch,
        `SELECT version FROM ${ident(fresh)}.schema_migrations ORDER BY version`,
      );
      expect(recorded.map((r) => r.version)).toEqual(migrations.map((m) => m.version));
    } finally {
      await ch.command({ query: `DROP DATABASE IF EXISTS ${ident(fresh)}` });
    }
  });

  it("concurrent runs both succeed and leave one current schema", async () => {
    const fresh = guid();
    try {
      await Promise.all([migrate(ch, fresh), migrate(ch, fresh)]);
      expect(await schemaVersion(ch, fresh)).toBe(latestSchemaVersion);
      const versions = await queryRows<{ version: number }>(ch, sql.appliedVersions(fresh));
      expect(versions.map((r) => r.version)).toEqual(migrations.map((m) => m.version));
      expect(await migrate(ch, fresh)).toEqual([]);
    } finally {
      await ch.command({ query: `DROP DATABASE IF EXISTS ${ident(fresh)}` });
    }
  });
});

describe("error classification against the real server", () => {
  it("reads the numeric error code of 18.16 errors and classifies bad data as permanent", async () => {
    const { createClickHouse, clickHouseErrorCode, isPermanentInsertError } =
      await import("../src/clickhouse/index.js");
    const { inject } = await import("vitest");
    const client = createClickHouse({
      url: inject("clickhouseUrl"),
      user: "default",
      password: "",
      database: "default",
      timeoutMs: 10_000,
    });
    try {
      const syntax = await client.query({ query: "SELEC 1" }).catch((e: unknown) => e);
      expect(clickHouseErrorCode(syntax)).toBe("62");
      const parse = await client.query({ query: "SELECT toInt32('x')" }).catch((e: unknown) => e);
      expect(isPermanentInsertError(parse)).toBe(true);
      expect(isPermanentInsertError(new Error("socket hang up"))).toBe(false);
    } finally {
      await client.close();
    }
  });
});
