import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createClickHouse,
  ident,
  insertRowBinary,
  isPermanentInsertError,
  clickHouseErrorCode,
  lit,
  migrate,
  queryRows,
  RowEncodingError,
  sql,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import type { EventRow, LedgerRow, RewriteRow } from "../src/sink/dedup.js";
import { InsertCoalescer, type Fence } from "../src/sink/insert-coalescer.js";
import { sinkMetrics } from "../src/sink/metrics.js";
import { guid, testConfig } from "./helpers.js";

// The sink's write path against the real ClickHouse 18.16 of the test run: RowBinary rows come
// back byte for byte, whatever they hold, and the partitions of one flush tick share one insert
// statement per table without giving up the lease fence or data-error isolation.

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

const open: Fence = { mayWrite: () => true };
const closed: Fence = { mayWrite: () => false };

const controls = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("");
const hostile = [
  "",
  "tab\there",
  "line1\nline2\r\n",
  "back\\slash\\",
  "\\N",
  "\\t\\n\\0\\x41",
  "'single' \"double\" `back`",
  controls,
  "nul\0in\0the middle",
  "\x7f\u0080\u009f",
  "héllo 日本語 😀🎉👩‍👩‍👧‍👦 \u{10FFFF}",
  "\u202Eevil\u202C \u2028\u2029 \uFEFF \uFFFD\uFFFE\uFFFF",
  "{x:String} $1 ? ; DROP TABLE events; --",
  "e\u0301\u0308 Z\u0351\u036B",
  `${"é\t\\'\n".repeat(51)}x`, // 256 characters of escapes
  "x".repeat(256),
];

function eventRow(id: string, s: string, i: number): EventRow {
  return {
    customer: `c-${s}`,
    type: `t-${s}`,
    ts: 1_764_460_800_000 + i,
    id,
    received: 1_764_460_801_000 + i,
    source: s,
    prop_keys: [s, "k", ""],
    prop_values: ["", s, `v${i}`],
  };
}

function ledgerRow(r: EventRow, partition = 3): LedgerRow {
  return {
    id: r.id,
    customer: r.customer,
    type: r.type,
    ts: r.ts,
    fp: "0123456789abcdef",
    bus_partition: partition,
    seen_day: "2026-11-30",
  };
}

function rewriteRow(r: EventRow): RewriteRow {
  return { customer: r.customer, type: r.type, ts: r.ts, id: r.id, recorded_at: "2026-11-30 01:02:03" };
}

async function eventsOf(ids: readonly string[]): Promise<EventRow[]> {
  const rows = await queryRows<Omit<EventRow, "ts" | "received"> & { ts: string; received: string }>(
    ch,
    `SELECT customer, type, toString(ts) AS ts, id, toString(received) AS received, source, prop_keys, prop_values
     FROM ${sql.eventsTable(db)} WHERE has(${lit(ids)}, id)`,
  );
  return rows.map((r) => ({ ...r, ts: Number(r.ts), received: Number(r.received) }));
}

async function idsIn(table: string, prefix: string): Promise<string[]> {
  const rows = await queryRows<{ id: string }>(
    ch,
    `SELECT id FROM ${table} WHERE startsWith(id, '${prefix}') ORDER BY id`,
  );
  return rows.map((r) => r.id);
}

function statements(): Promise<number> {
  return sinkMetrics.insertStatements.get().then((m) => m.values[0]?.value ?? 0);
}

describe("RowBinary inserts round-trip through ClickHouse 18.16 (happy, security)", () => {
  it("every hostile value in every column of events, ledger and rewrite records comes back unchanged", async () => {
    const prefix = guid();
    const rows = hostile.map((s, i) => eventRow(`${prefix}-${i}-${s}`.slice(0, 256), s, i));
    const inserts = new InsertCoalescer(ch, db, 10);
    const t = inserts.open(true);
    const outcome = await t.submit(
      { rows, ledger: rows.map((r) => ledgerRow(r)), rewritten: rows.map(rewriteRow) },
      open,
    );
    expect(outcome).toBe("written");

    const back = await eventsOf(rows.map((r) => r.id));
    expect(back.sort((a, b) => (a.id < b.id ? -1 : 1))).toEqual(
      [...rows].sort((a, b) => (a.id < b.id ? -1 : 1)),
    );

    const ledger = await queryRows<{
      id: string;
      customer: string;
      type: string;
      ts: string;
      fp: string;
      bus_partition: number;
      seen_day: string;
    }>(
      ch,
      `SELECT id, customer, type, toString(ts) AS ts, fp, bus_partition, toString(seen_day) AS seen_day
       FROM ${sql.ledgerTable(db)} WHERE startsWith(id, '${prefix}')`,
    );
    expect(ledger.map((r) => ({ ...r, ts: Number(r.ts) })).sort((a, b) => (a.id < b.id ? -1 : 1))).toEqual(
      rows.map((r) => ledgerRow(r)).sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    const rewrites = await queryRows<{ id: string; customer: string; recorded_at: string; ts: string }>(
      ch,
      `SELECT id, customer, toString(ts) AS ts, toString(toUnixTimestamp(recorded_at)) AS recorded_at
       FROM ${sql.rewritesTable(db)} WHERE startsWith(id, '${prefix}')`,
    );
    expect(rewrites).toHaveLength(rows.length);
    for (const r of rewrites) {
      expect(r.customer).toBe(rows.find((x) => x.id === r.id)!.customer);
      // recorded_at is UTC: 2026-11-30 01:02:03Z
      expect(Number(r.recorded_at)).toBe(Date.parse("2026-11-30T01:02:03Z") / 1000);
    }
  });

  it("random strings of quoting characters, controls and any Unicode come back unchanged (property)", async () => {
    const unit = fc.oneof(
      { arbitrary: fc.constantFrom("\t", "\n", "\r", "\\", "'", '"', "\0", "\\N", "\\t", ","), weight: 3 },
      { arbitrary: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)), weight: 3 },
      { arbitrary: fc.integer({ min: 0x80, max: 0xffff }).map((c) => String.fromCharCode(c)), weight: 1 },
      {
        arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
        weight: 1,
      },
    );
    const value = fc
      .string({ unit, maxLength: 60 })
      .filter((s) => Buffer.from(s, "utf8").toString("utf8") === s);
    const inserts = new InsertCoalescer(ch, db, 10);
    await fc.assert(
      fc.asyncProperty(fc.array(value, { minLength: 1, maxLength: 8 }), async (values) => {
        const prefix = guid();
        const rows = values.map((s, i) => eventRow(`${prefix}-${i}`, s, i));
        expect(await inserts.open(true).submit({ rows, ledger: [], rewritten: [] }, open)).toBe("written");
        const back = await eventsOf(rows.map((r) => r.id));
        expect(back.sort((a, b) => (a.id < b.id ? -1 : 1))).toEqual(rows);
      }),
      { numRuns: 25 },
    );
  });
});

describe("InsertCoalescer: partitions of one tick share the statements", () => {
  it("two partitions flushing in the same tick: one insert per table, both resolved", async () => {
    const prefix = guid();
    const inserts = new InsertCoalescer(ch, db, 5_000);
    const a = inserts.open();
    const b = inserts.open();
    const rowsA = [eventRow(`${prefix}-a`, "a", 1)];
    const rowsB = [eventRow(`${prefix}-b`, "b", 2)];
    const before = await statements();
    const pa = a.submit({ rows: rowsA, ledger: rowsA.map((r) => ledgerRow(r, 0)), rewritten: [] }, open);
    // B is still looking up: A's rows wait for it (up to maxGatherMs, 5 s here).
    await new Promise((r) => setTimeout(r, 50));
    expect(await statements()).toBe(before);
    const pb = b.submit({ rows: rowsB, ledger: rowsB.map((r) => ledgerRow(r, 1)), rewritten: [] }, open);
    expect(await Promise.all([pa, pb])).toEqual(["written", "written"]);
    expect((await statements()) - before).toBe(2); // one ledger insert, one events insert
    expect(await idsIn(sql.eventsTable(db), prefix)).toEqual([`${prefix}-a`, `${prefix}-b`]);
    expect(await idsIn(sql.ledgerTable(db), prefix)).toEqual([`${prefix}-a`, `${prefix}-b`]);
  });

  it("does not wait longer than maxGatherMs for a partition still looking up, nor for one that gave up", async () => {
    const prefix = guid();
    const inserts = new InsertCoalescer(ch, db, 30);
    const slow = inserts.open();
    const gaveUp = inserts.open();
    const fast = inserts.open();
    gaveUp.close();
    const rows = [eventRow(`${prefix}-fast`, "f", 1)];
    const started = performance.now();
    expect(await fast.submit({ rows, ledger: [], rewritten: [] }, open)).toBe("written");
    expect(performance.now() - started).toBeLessThan(2_000);
    slow.close();
    expect(await idsIn(sql.eventsTable(db), prefix)).toEqual([`${prefix}-fast`]);
  });
});

describe("InsertCoalescer: failures and fences (error, security)", () => {
  it("a failed shared statement fails every partition in it, as retriable when the server is at fault", async () => {
    const inserts = new InsertCoalescer(ch, `${db}_missing`, 5_000);
    const a = inserts.open();
    const b = inserts.open();
    const pa = a.submit({ rows: [eventRow("a", "a", 1)], ledger: [], rewritten: [] }, open);
    const pb = b.submit({ rows: [eventRow("b", "b", 2)], ledger: [], rewritten: [] }, open);
    const [ea, eb] = await Promise.all([pa.catch((e: unknown) => e), pb.catch((e: unknown) => e)]);
    expect(clickHouseErrorCode(ea)).toMatch(/^(60|81)$/); // UNKNOWN_TABLE / UNKNOWN_DATABASE
    expect(eb).toBe(ea);
    expect(isPermanentInsertError(ea)).toBe(false);
  });

  it("a partition whose lease is past its write deadline is left out; the others are written", async () => {
    const prefix = guid();
    const inserts = new InsertCoalescer(ch, db, 5_000);
    const late = inserts.open();
    const live = inserts.open();
    const lateRows = [eventRow(`${prefix}-late`, "l", 1)];
    const liveRows = [eventRow(`${prefix}-live`, "v", 2)];
    const pLate = late.submit(
      { rows: lateRows, ledger: lateRows.map((r) => ledgerRow(r, 0)), rewritten: [] },
      closed,
    );
    const pLive = live.submit(
      { rows: liveRows, ledger: liveRows.map((r) => ledgerRow(r, 1)), rewritten: [] },
      open,
    );
    expect(await Promise.all([pLate, pLive])).toEqual(["abandon", "written"]);
    expect(await idsIn(sql.eventsTable(db), prefix)).toEqual([`${prefix}-live`]);
    expect(await idsIn(sql.ledgerTable(db), prefix)).toEqual([`${prefix}-live`]);
  });

  it("a lease that ends after the ledger statement: its event rows are never sent", async () => {
    const prefix = guid();
    const inserts = new InsertCoalescer(ch, db, 5_000);
    // Says yes to the two checks of the ledger statement (before encoding, right before
    // sending), then no: the deadline passes while the ledger insert is in flight.
    let asked = 0;
    const ending: Fence = { mayWrite: () => ++asked <= 2 };
    const rows = [eventRow(`${prefix}-x`, "x", 1)];
    const outcome = await inserts
      .open()
      .submit({ rows, ledger: rows.map((r) => ledgerRow(r)), rewritten: [] }, ending);
    expect(outcome).toBe("abandon");
    // Like a crash between the two inserts: the next owner's ledger check rewrites the row.
    expect(await idsIn(sql.ledgerTable(db), prefix)).toEqual([`${prefix}-x`]);
    expect(await idsIn(sql.eventsTable(db), prefix)).toEqual([]);
  });

  it("rows that cannot be encoded fail only their own partition, as a permanent (data) error", async () => {
    const prefix = guid();
    const inserts = new InsertCoalescer(ch, db, 5_000);
    const bad = inserts.open();
    const good = inserts.open();
    const badRows = [eventRow(`${prefix}-bad`, "b", 1)];
    const goodRows = [eventRow(`${prefix}-good`, "g", 2)];
    const pBad = bad.submit(
      { rows: badRows, ledger: [{ ...ledgerRow(badRows[0]!), seen_day: "not a day" }], rewritten: [] },
      open,
    );
    const pGood = good.submit(
      { rows: goodRows, ledger: goodRows.map((r) => ledgerRow(r)), rewritten: [] },
      open,
    );
    const err = await pBad.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RowEncodingError);
    expect(isPermanentInsertError(err)).toBe(true);
    expect(await pGood).toBe("written");
    expect(await idsIn(sql.eventsTable(db), prefix)).toEqual([`${prefix}-good`]);
  });

  it("a RowBinary body that ends inside a row is a permanent data error (isolation applies)", async () => {
    // customer "abc" then a string length of 5 with only 2 bytes after it
    const truncated = Buffer.from([3, 0x61, 0x62, 0x63, 5, 0x61, 0x62]);
    const err = await insertRowBinary(
      ch,
      sql.eventsTable(db),
      ["customer", "type", "ts", "id", "received", "source", "prop_keys", "prop_values"],
      truncated,
    ).catch((e: unknown) => e);
    expect(clickHouseErrorCode(err)).toBeDefined();
    expect(isPermanentInsertError(err)).toBe(true);
  });
});
