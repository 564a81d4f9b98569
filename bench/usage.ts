/**
 * Usage query benchmark: the real-time usage query path (`queryUsage`, the one the usage API, the
 * portal and the close job share) on ClickHouse 18.16 over a month of at least 100 million events.
 *
 *   npm run bench -- usage [--events 100000000] [--chunk 10000000] [--runs 200] [--warmup 10]
 *                          [--all-runs 5] [--anatomy-runs 20] [--settle 900] [--keep-data <dir>]
 *
 * 1. Starts clickhouse-server in a temp data dir (or `--keep-data <dir>`, kept afterwards: a rerun
 *    that finds the same data set there reuses it instead of generating it again), creates the
 *    schema with `migrate()`.
 * 2. Generates the data set inside ClickHouse (`INSERT ... SELECT ... FROM numbers(N)`, in chunks):
 *    `--events` events over 2026-10 (UTC), 2% `storage` gauge events, the rest `api_call` with
 *    properties `tokens` (decimal text), `region` (5 values), `user`; 2,000 customers drawn from a
 *    Zipf-like law (exponent 0.7: the biggest has ~2.6% of all events, the median ~0.027%);
 *    unique ids, random times and values (deterministic: the same on every run). Then 0.1% of the
 *    events are written a second time the way the sink rewrites after a crash: a record of each
 *    id in `event_rewrites` first, then the identical row, so the dedup has something to do.
 *    Waits until background merges are done (at most `--settle` s) and records the table's rows,
 *    parts and bytes on disk. A reused data dir gets pending migrations and missing rewrite
 *    records added (so data kept from an older schema still answers exactly).
 * 3. For the biggest and the median customer: `--runs` timed runs (after `--warmup` untimed
 *    rounds) of three `queryUsage` requests (count per day in Europe/Berlin; sum of tokens per day
 *    by region; unique users over the month), each next to a bare ClickHouse query of the same
 *    shape without the dedup, and the plain `count()` of the month. Runs go round-robin over all
 *    queries of a customer, so other load on the machine hits them alike. Times are wall time in
 *    this process around the call (HTTP, JSON parsing and the JS post-processing included).
 * 4. All customers for the month (what the close job asks: sum of tokens, one row per customer, no
 *    window): `--all-runs` runs each of `queryUsage` and the bare query, every time reported.
 * 5. Anatomy (server side, `--anatomy-runs` runs each, from system.query_log): the SQL queryUsage
 *    sent (captured from the client), the bare queries and two other ways to collapse copies
 *    (every id by `GROUP BY id`, as queryUsage did before 106057d; `FINAL`), with rows and bytes
 *    read and memory used: where the time goes.
 * 6. Prints a table and, as the last stdout line, one JSON object. Progress goes to stderr.
 *
 * The watermark is a stub (`Date.now()`): no NATS; what is measured is the ClickHouse path.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { DateTime } from "luxon";
import type { Meter } from "../src/catalog/index.js";
import {
  createClickHouse,
  ident,
  sql,
  lit,
  migrate,
  queryRows,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import { startClickHouse, type ServerProcess } from "../src/dev/servers.js";
import {
  fillRollup,
  queryUsage,
  type UsageDeps,
  type UsageRequest,
  type UsageResult,
} from "../src/usage/index.js";
import { benchDataDir, intArg, keepDataArg } from "./lib/args.js";
import { Cleanup } from "./lib/children.js";
import { CpuMeter, machineCoresBusy, round } from "./lib/proc.js";
import { fmt, machineBase, progressLog, table as alignedTable } from "./lib/report.js";

const progress = progressLog("usage");
/** This bench's tables have two text columns (customer, query). */
const table = (rows: string[][]) => alignedTable(rows, 2);

/** The issue's target: one customer's month, p99 on this 2-core machine. */
const targetP99Ms = 100;
/** The issue's target for every customer's month (the close's question), per run. */
const targetAllMs = 2_000;

const db = "usage_bench";
/** Bumped whenever the generator changes, so a kept data dir from an older one is regenerated. */
const generatorVersion = 1;
const customers = 2000;
/** Zipf-like exponent of events per customer rank (see {@link generatorSql}). */
const zipfS = 0.7;
/** Every `dupEvery`-th event (n % dupEvery = 7) is written twice, announced in event_rewrites. */
const dupEvery = 1000;
/** The events that get a second copy, as a source for {@link generatorSql}. */
const dupSource = (n: number) => `SELECT number * ${dupEvery} + 7 AS n FROM numbers(${duplicates(n)})`;

const monthStartUtc = Date.UTC(2026, 9, 1);
const monthEndUtc = Date.UTC(2026, 10, 1);
const tz = "Europe/Berlin";
/** The customer's month in their zone (the portal's view): [2026-10-01, 2026-11-01) Berlin. */
const berlin = {
  fromMs: DateTime.fromISO("2026-10-01T00:00:00", { zone: tz }).toMillis(),
  toMs: DateTime.fromISO("2026-11-01T00:00:00", { zone: tz }).toMillis(),
};

interface Args {
  events: number;
  chunk: number;
  runs: number;
  warmup: number;
  allRuns: number;
  anatomyRuns: number;
  settleS: number;
  keepData: string | null;
}

function parseArgs(args: readonly string[]): Args {
  const known = new Set([
    "--events",
    "--chunk",
    "--runs",
    "--warmup",
    "--all-runs",
    "--anatomy-runs",
    "--settle",
    "--keep-data",
  ]);
  for (const a of args) {
    if (a.startsWith("--") && !known.has(a)) {
      throw new Error(`unknown option ${a}; options: ${[...known].join(" ")}`);
    }
  }
  const num = (name: string, fallback: number, min: number) => intArg(args, name, fallback, min);
  return {
    events: num("events", 100_000_000, 100_000),
    chunk: num("chunk", 10_000_000, 100_000),
    runs: num("runs", 200, 1),
    warmup: num("warmup", 10, 0),
    allRuns: num("all-runs", 5, 1),
    anatomyRuns: num("anatomy-runs", 20, 0),
    settleS: num("settle", 900, 0),
    keepData: keepDataArg(args),
  };
}

/**
 * The statement(s) of a recorded queryUsage call that read `events`. queryUsage also counts the
 * `event_rewrites` records in scope before and after (small index reads, `usageRewriteCount`);
 * the anatomy re-runs only the statement that does the work.
 */
function eventsSql(recorded: readonly string[]): string {
  return (
    recorded
      .filter((q) => !/^SELECT toString\(count\(\)\) AS n FROM \S+\.event_rewrites /.test(q))
      // The read's plan (fill units, tail probe, records), not the usage statement itself.
      .filter((q) => !q.startsWith("SELECT 'u' AS k"))
      .join(";\n")
  );
}

/** Entry point called by bench/run.ts with the arguments after the bench name. */
export async function main(args: string[]): Promise<void> {
  const a = parseArgs(args);
  const cleanup = new Cleanup();
  try {
    await run(a, cleanup);
  } finally {
    await cleanup.run(60_000);
  }
}

// --- Meters and queries -------------------------------------------------------------------------

const appliedAt = new Date(monthStartUtc).toISOString();
const meters = {
  apiCalls: {
    key: "api_calls",
    event_type: "api_call",
    aggregation: "count",
    group_by: ["region"],
    version: 1,
    applied_at: appliedAt,
  },
  tokens: {
    key: "tokens",
    event_type: "api_call",
    aggregation: "sum",
    value_property: "tokens",
    group_by: ["region"],
    version: 1,
    applied_at: appliedAt,
  },
  activeUsers: {
    key: "active_users",
    event_type: "api_call",
    aggregation: "unique_count",
    value_property: "user",
    version: 1,
    applied_at: appliedAt,
  },
} satisfies Record<string, Meter>;

type KindKey = "count_day" | "sum_region_day" | "unique_month";

/** One usage question, asked through queryUsage and as a bare query of the same shape. */
interface Kind {
  key: KindKey;
  label: string;
  request(customer: string): UsageRequest;
  /** The same answer computed without the dedup (what ClickHouse alone costs). */
  bare(customer: string): string;
}

const events = `${ident(db)}.events`;
const propSql = (name: string) => `prop_values[indexOf(prop_keys, ${lit(name)})]`;
const dayBucket = `toString(toUnixTimestamp(toStartOfDay(toDateTime(intDiv(ts, 1000)), ${lit(tz)})))`;
const customerMonth = (customer: string) =>
  `customer = ${lit(customer)} AND type = 'api_call' AND ts >= ${lit(berlin.fromMs)} AND ts < ${lit(berlin.toMs)}`;

const kinds: readonly Kind[] = [
  {
    key: "count_day",
    label: "count per day (Berlin)",
    request: (customer) => ({ meter: meters.apiCalls, customer, ...berlin, window: "day", tz }),
    bare: (customer) =>
      `SELECT ${dayBucket} AS bucket, toString(count()) AS value FROM ${events}
WHERE ${customerMonth(customer)} GROUP BY bucket ORDER BY bucket`,
  },
  {
    key: "sum_region_day",
    label: "sum tokens per day by region",
    request: (customer) => ({
      meter: meters.tokens,
      customer,
      ...berlin,
      window: "day",
      tz,
      groupBy: ["region"],
    }),
    bare: (customer) =>
      `SELECT ${propSql("region")} AS region, ${dayBucket} AS bucket,
  toString(sum(toDecimal128(${propSql("tokens")}, 9))) AS value FROM ${events}
WHERE ${customerMonth(customer)} AND has(prop_keys, 'tokens') GROUP BY region, bucket ORDER BY region, bucket`,
  },
  {
    key: "unique_month",
    label: "unique_count users, month",
    request: (customer) => ({ meter: meters.activeUsers, customer, ...berlin, window: "month", tz }),
    bare: (customer) =>
      `SELECT toString(uniqExact(${propSql("user")})) AS value FROM ${events}
WHERE ${customerMonth(customer)} AND has(prop_keys, 'user')`,
  },
];

/** The brief's floor: one customer's month counted, no dedup, no buckets. */
const plainCount = (customer: string) =>
  `SELECT toString(count()) AS value FROM ${events} WHERE ${customerMonth(customer)}`;

/** The close job's question: every customer's month, no window. */
const allRequest: UsageRequest = { meter: meters.tokens, fromMs: monthStartUtc, toMs: monthEndUtc };
const allBare = `SELECT customer, toString(sum(toDecimal128(${propSql("tokens")}, 9))) AS value FROM ${events}
WHERE type = 'api_call' AND ts >= ${lit(monthStartUtc)} AND ts < ${lit(monthEndUtc)} AND has(prop_keys, 'tokens')
GROUP BY customer ORDER BY customer`;

// --- Data set -----------------------------------------------------------------------------------

/**
 * The generator: one event per `n` of `source` (a query yielding column `n`), a pure function of
 * `n`, so duplicates are the same rows again. Customer rank k ∈ [1, 2000] comes from inverting the
 * CDF of the continuous density k^-0.7 with a uniform hash; times are uniform over the month
 * (random order: what an ingest stream of many customers looks like).
 */
function generatorSql(source: string): string {
  const monthMs = monthEndUtc - monthStartUtc;
  const e = 1 - zipfS;
  return `SELECT customer, type, ts, id, received, source, prop_keys, prop_values FROM (
  SELECT n,
    intHash64(n * 4) AS h0, intHash64(n * 4 + 1) AS h1, intHash64(n * 4 + 2) AS h2, intHash64(n * 4 + 3) AS h3,
    least(${customers}, toUInt32(floor(pow(1 + (h0 % 4294967296) / 4294967296 * (pow(${customers + 1}, ${e}) - 1), 1 / ${e})))) AS k,
    concat('cust-', substring(toString(10000 + k), 2)) AS customer,
    n % 50 = 49 AS gauge,
    if(gauge, 'storage', 'api_call') AS type,
    ${monthStartUtc} + toInt64(h3 % ${monthMs}) AS ts,
    concat('e', toString(n)) AS id,
    ts + 5 + toInt64(intDiv(h3, ${monthMs}) % 3000) AS received,
    if(h1 % 3 = 0, 'http', 'sdk') AS source,
    arrayElement(['eu-west-1', 'eu-central-1', 'us-east-1', 'us-west-2', 'ap-south-1'], h2 % 5 + 1) AS region,
    if(gauge, ['gb', 'region'], ['tokens', 'region', 'user']) AS prop_keys,
    if(gauge,
      [concat(toString(intDiv(h1, 7) % (10 * (${customers + 1} - k))), '.', substring(toString(1000 + h1 % 1000), 2)), region],
      [concat(toString(h1 % 5000), '.', substring(toString(1000 + intDiv(h1, 5000) % 1000), 2)), region,
       concat('user-', toString(intDiv(h2, 5) % (5 + intDiv(20000, k))))]) AS prop_values
  FROM (${source})
)`;
}

interface Dataset {
  events: number;
  duplicatesInserted: number;
  generationS: number;
  settleS: number;
  reused: boolean;
  rows: number;
  apiCallRows: number;
  storageRows: number;
  duplicatesRemaining: number;
  rewriteRecords: number;
  parts: number;
  bytesOnDisk: number;
  bytesUncompressed: number;
  customers: number;
}

const infoTable = `${ident(db)}.bench_dataset`;

async function ensureDataset(ch: ClickHouseClient, a: Args): Promise<Dataset> {
  // Looked up in system.tables first: a query on a missing table would log a client error.
  const [known] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM system.tables WHERE database = ${lit(db)} AND name = 'bench_dataset'`,
  );
  const prior =
    known?.n === "1"
      ? await queryRows<{ events: string; generator: string; generation_s: number; settle_s: number }>(
          ch,
          `SELECT toString(events) AS events, toString(generator) AS generator, generation_s, settle_s FROM ${infoTable}`,
        )
      : [];
  const p = prior[0];
  let generationS: number;
  let settleS: number;
  let reused = false;
  if (p !== undefined && Number(p.events) === a.events && Number(p.generator) === generatorVersion) {
    progress(`reusing the data set in the data dir (${a.events.toLocaleString("en-US")} events)`);
    generationS = Number(p.generation_s);
    settleS = Number(p.settle_s);
    reused = true;
    // Migrations added since the data set was made (the rows are the same; new tables are not).
    await migrate(ch, db);
    await announceRewrites(ch, a.events);
  } else {
    if (p !== undefined) progress("the data dir holds another data set: generating a new one");
    await ch.command({ query: `DROP DATABASE IF EXISTS ${ident(db)}` });
    await migrate(ch, db);
    ({ generationS, settleS } = await generate(ch, a));
    await ch.command({
      query: `CREATE TABLE ${infoTable} (events UInt64, generator UInt32, generation_s Float64, settle_s Float64, created DateTime) ENGINE = TinyLog`,
    });
    await ch.command({
      query: `INSERT INTO ${infoTable} VALUES (${lit(a.events)}, ${lit(generatorVersion)}, ${lit(generationS)}, ${lit(settleS)}, now())`,
    });
  }
  return { ...(await describe(ch, a.events)), generationS, settleS, reused };
}

async function generate(ch: ClickHouseClient, a: Args): Promise<{ generationS: number; settleS: number }> {
  const t0 = performance.now();
  const chunks = Math.ceil(a.events / a.chunk);
  progress(`generating ${a.events.toLocaleString("en-US")} events in ${chunks} chunks`);
  for (let i = 0; i < chunks; i++) {
    const offset = i * a.chunk;
    const count = Math.min(a.chunk, a.events - offset);
    const t = performance.now();
    await ch.command({
      query: `INSERT INTO ${events} ${generatorSql(`SELECT number + ${offset} AS n FROM numbers(${count})`)}`,
    });
    const s = (performance.now() - t) / 1000;
    progress(
      `  chunk ${i + 1}/${chunks}: ${count.toLocaleString("en-US")} rows in ${s.toFixed(1)} s ` +
        `(${Math.round(count / s).toLocaleString("en-US")} rows/s)`,
    );
  }
  // As the sink does it: the record of a rewrite first, then the second copy.
  await announceRewrites(ch, a.events);
  progress(`writing ${duplicates(a.events).toLocaleString("en-US")} second copies (a sink crash's rewrites)`);
  await ch.command({ query: `INSERT INTO ${events} ${generatorSql(dupSource(a.events))}` });
  const generationS = (performance.now() - t0) / 1000;
  progress(
    `generated in ${generationS.toFixed(1)} s; waiting for background merges (at most ${a.settleS} s)`,
  );
  const t1 = performance.now();
  await settle(ch, a.settleS);
  return { generationS, settleS: (performance.now() - t1) / 1000 };
}

function duplicates(n: number): number {
  return Math.floor((n - 8) / dupEvery) + 1;
}

/** Records in `event_rewrites` for every id that gets a second copy (added once; idempotent). */
async function announceRewrites(ch: ClickHouseClient, n: number): Promise<void> {
  const [r] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM ${sql.rewritesTable(db)}`,
  );
  const have = Number(r?.n ?? 0);
  if (have === duplicates(n)) return;
  if (have !== 0)
    throw new Error(`${sql.rewritesTable(db)} holds ${have} records, expected 0 or ${duplicates(n)}`);
  progress(`recording ${duplicates(n).toLocaleString("en-US")} rewrites in event_rewrites`);
  await ch.command({
    query: `INSERT INTO ${sql.rewritesTable(db)} (customer, type, ts, id, recorded_at)
SELECT customer, type, ts, id, now() FROM (${generatorSql(dupSource(n))})`,
  });
}

/** Waits until no merge ran on the table for three polls in a row, or `maxS` passed. */
async function settle(ch: ClickHouseClient, maxS: number): Promise<void> {
  const deadline = performance.now() + maxS * 1000;
  let quiet = 0;
  let nextReport = performance.now() + 15_000;
  while (performance.now() < deadline && quiet < 3) {
    const [r] = await queryRows<{ merges: string; parts: string }>(
      ch,
      `SELECT toString((SELECT count() FROM system.merges WHERE database = ${lit(db)})) AS merges,
  toString((SELECT count() FROM system.parts WHERE database = ${lit(db)} AND table = 'events' AND active)) AS parts`,
    );
    quiet = r?.merges === "0" ? quiet + 1 : 0;
    if (performance.now() > nextReport) {
      nextReport += 15_000;
      progress(`  merging: ${r?.merges} merges running, ${r?.parts} active parts`);
    }
    await sleep(2000);
  }
  if (quiet < 3) progress(`WARNING: merges still running after ${maxS} s; measuring anyway`);
}

async function describe(
  ch: ClickHouseClient,
  n: number,
): Promise<Omit<Dataset, "generationS" | "settleS" | "reused">> {
  const [parts] = await queryRows<Record<string, string>>(
    ch,
    `SELECT toString(sum(rows)) AS rows, toString(count()) AS parts, toString(sum(bytes_on_disk)) AS bytes,
  toString(sum(data_uncompressed_bytes)) AS uncompressed
FROM system.parts WHERE database = ${lit(db)} AND table = 'events' AND active`,
  );
  const types = await queryRows<{ type: string; n: string }>(
    ch,
    `SELECT type, toString(count()) AS n FROM ${events} GROUP BY type`,
  );
  // Copies left unmerged: the duplicated ids end in 007 (or are e7).
  const [dups] = await queryRows<{ rows: string; ids: string }>(
    ch,
    `SELECT toString(count()) AS rows, toString(uniqExact(id)) AS ids FROM ${events} WHERE endsWith(id, '007') OR id = 'e7'`,
  );
  const [cs] = await queryRows<{ n: string }>(ch, `SELECT toString(uniqExact(customer)) AS n FROM ${events}`);
  const [rw] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM ${sql.rewritesTable(db)}`,
  );
  const typeRows = (t: string) => Number(types.find((r) => r.type === t)?.n ?? 0);
  return {
    events: n,
    duplicatesInserted: duplicates(n),
    rows: Number(parts?.rows ?? 0),
    apiCallRows: typeRows("api_call"),
    storageRows: typeRows("storage"),
    duplicatesRemaining: Number(dups?.rows ?? 0) - Number(dups?.ids ?? 0),
    rewriteRecords: Number(rw?.n ?? 0),
    parts: Number(parts?.parts ?? 0),
    bytesOnDisk: Number(parts?.bytes ?? 0),
    bytesUncompressed: Number(parts?.uncompressed ?? 0),
    customers: Number(cs?.n ?? 0),
  };
}

// --- Measuring ----------------------------------------------------------------------------------

interface Stats {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

function stats(ms: readonly number[]): Stats {
  const s = [...ms].sort((x, y) => x - y);
  // Nearest rank: p99 of 200 runs is the 198th fastest.
  const q = (p: number) => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!);
  const r = (v: number) => round(v, 1);
  return {
    n: s.length,
    p50: r(q(0.5)),
    p95: r(q(0.95)),
    p99: r(q(0.99)),
    max: r(s[s.length - 1] ?? NaN),
    mean: r(s.reduce((t, v) => t + v, 0) / Math.max(1, s.length)),
  };
}

/** One timed query: `run` resolves with the number of rows of the answer. */
interface Timed {
  id: string;
  who: "biggest" | "median";
  kind: KindKey | "count_month";
  /** tally: queryUsage (rollup + open tail); raw: queryUsage with the rollup off; bare: SQL without dedup. */
  path: "tally" | "raw" | "bare";
  run(): Promise<number>;
  ms: number[];
  rows: number;
}

/** Warm-up rounds, then `runs` rounds over every query, starting each round one query later. */
async function measure(series: Timed[], runs: number, warmup: number, label: string): Promise<void> {
  progress(`${label}: ${warmup} warm-up rounds`);
  for (let i = 0; i < warmup; i++) for (const s of series) s.rows = await s.run();
  progress(`${label}: ${runs} timed rounds of ${series.length} queries`);
  let nextReport = performance.now() + 30_000;
  for (let i = 0; i < runs; i++) {
    for (let j = 0; j < series.length; j++) {
      const s = series[(i + j) % series.length]!;
      const t = performance.now();
      s.rows = await s.run();
      s.ms.push(performance.now() - t);
    }
    if (performance.now() > nextReport || i === runs - 1) {
      nextReport = performance.now() + 30_000;
      progress(
        `  ${i + 1}/${runs}: p50 ms ${series.map((s) => `${s.kind}${s.path === "bare" ? "(bare)" : ""} ${stats(s.ms).p50}`).join(", ")}`,
      );
    }
  }
}

/** A client that records the SQL of every query (to time and inspect what queryUsage sends). */
function recording(ch: ClickHouseClient): { client: ClickHouseClient; sql: string[] } {
  const sql: string[] = [];
  const client = new Proxy(ch, {
    get(target, prop, receiver) {
      if (prop === "query") {
        const query: ClickHouseClient["query"] = (params) => {
          sql.push(params.query);
          return target.query(params);
        };
        return query;
      }
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? (v as (...x: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { client, sql };
}

interface Anatomy {
  name: string;
  client_p50_ms: number;
  server_p50_ms: number;
  server_max_ms: number;
  read_rows: number;
  read_mb: number;
  memory_mb: number;
}

/**
 * Runs each query `runs` times with `log_queries = 1` under its own query ids and reads what the
 * server says it spent: duration, rows and bytes read, peak memory.
 */
async function anatomy(ch: ClickHouseClient, queries: [string, string][], runs: number): Promise<Anatomy[]> {
  const tag = randomBytes(4).toString("hex");
  const client = new Map<string, number[]>();
  for (let i = 0; i < runs; i++) {
    for (const [name, query] of queries) {
      const t = performance.now();
      const rs = await ch.query({
        query,
        format: "JSONEachRow",
        query_id: `usage-bench-${tag}-${name}-${i}`,
        clickhouse_settings: { log_queries: 1 },
      });
      await rs.json();
      client.set(name, [...(client.get(name) ?? []), performance.now() - t]);
    }
  }
  await ch.command({ query: "SYSTEM FLUSH LOGS" });
  const rows = await queryRows<Record<string, string>>(
    ch,
    `SELECT query_id, toString(query_duration_ms) AS ms, toString(read_rows) AS read_rows,
  toString(read_bytes) AS read_bytes, toString(memory_usage) AS memory
FROM system.query_log WHERE type = 2 AND startsWith(query_id, ${lit(`usage-bench-${tag}-`)})`,
  );
  return queries.map(([name]) => {
    const mine = rows.filter((r) => r.query_id!.startsWith(`usage-bench-${tag}-${name}-`));
    const server = stats(mine.map((r) => Number(r.ms)));
    const median = (k: string) => {
      const v = mine.map((r) => Number(r[k])).sort((x, y) => x - y);
      return v[Math.floor(v.length / 2)] ?? NaN;
    };
    return {
      name,
      client_p50_ms: stats(client.get(name) ?? []).p50,
      server_p50_ms: server.p50,
      server_max_ms: server.max,
      read_rows: median("read_rows"),
      read_mb: round(median("read_bytes") / 1e6, 1),
      memory_mb: round(median("memory") / 1e6, 1),
    };
  });
}

// --- The run ------------------------------------------------------------------------------------

async function run(a: Args, cleanup: Cleanup): Promise<void> {
  const startedAt = new Date();
  const t0 = performance.now();
  const loadAtStart = os.loadavg();
  const busyBefore = await machineCoresBusy(2000);
  if (busyBefore > 0.2) {
    progress(`WARNING: the machine is already busy (${busyBefore} cores used by other processes)`);
  }

  const { dir: dataDir, existed } = benchDataDir(a.keepData, "usage", cleanup);
  if (a.keepData !== null) progress(`data dir (kept): ${dataDir}${existed ? " (exists)" : ""}`);

  progress("starting clickhouse-server");
  const server: ServerProcess = await startClickHouse({ dataDir });
  cleanup.add("stop clickhouse-server", () => server.stop(30_000));
  const ch = createClickHouse(
    { url: server.url, user: "default", password: "", database: "default", timeoutMs: 30 * 60_000 },
    4,
  );
  cleanup.add("close ClickHouse client", () => ch.close());
  const deps: UsageDeps = {
    clickhouse: ch,
    database: db,
    watermarks: { current: () => Promise.resolve(Date.now()) },
  };

  const dataset = await ensureDataset(ch, a);
  progress(
    `data set: ${dataset.rows.toLocaleString("en-US")} rows, ${dataset.parts} parts, ` +
      `${(dataset.bytesOnDisk / 1024 ** 3).toFixed(2)} GiB on disk`,
  );

  // Customers by their api_call events in the Berlin month: the biggest and the median one.
  const ranked = await queryRows<{ customer: string; n: string }>(
    ch,
    `SELECT customer, toString(count()) AS n FROM ${events}
WHERE type = 'api_call' AND ts >= ${lit(berlin.fromMs)} AND ts < ${lit(berlin.toMs)}
GROUP BY customer ORDER BY count() DESC, customer`,
  );
  const picked = {
    biggest: ranked[0]!,
    median: ranked[Math.floor(ranked.length / 2)]!,
  };
  progress(
    `biggest customer ${picked.biggest.customer} (${Number(picked.biggest.n).toLocaleString("en-US")} api_call rows), ` +
      `median ${picked.median.customer} (${Number(picked.median.n).toLocaleString("en-US")})`,
  );

  // The rollup: built once for each meter the bench reads (what a new meter version's first
  // background fill does), timed. The watermark stub is now, so every event's hour is closed.
  const rollupFill: Record<string, number> = {};
  for (const m of new Set([...kinds.map((k) => k.request("x").meter), allRequest.meter])) {
    const t = performance.now();
    let units = 0;
    for (;;) {
      const out = await fillRollup(deps, m, { settleMs: 0 });
      if (out.kind !== "filled") break;
      units++;
      if (!out.more) break;
    }
    rollupFill[m.key] = round((performance.now() - t) / 1000, 1);
    progress(`rollup of ${m.key} v${m.version}: ${units} units filled in ${rollupFill[m.key]} s`);
  }
  const rawDeps: UsageDeps = { ...deps, rollups: "off" };

  // The SQL queryUsage sends, captured once per question (for the anatomy and the report).
  const tallySql = new Map<string, string>();
  const lastAnswer = new Map<string, UsageResult>();
  for (const who of ["biggest", "median"] as const) {
    for (const k of kinds) {
      const rec = recording(ch);
      lastAnswer.set(
        `${who}.${k.key}`,
        await queryUsage({ ...deps, clickhouse: rec.client }, k.request(picked[who].customer)),
      );
      tallySql.set(`${who}.${k.key}`, eventsSql(rec.sql));
    }
  }

  const loadBeforeTiming = os.loadavg();
  const cpu = new CpuMeter(() => ({ "clickhouse-server": server.process.pid }));
  const cpuByPhase: Record<string, Record<string, number>> = {};
  const series: Timed[] = [];
  for (const who of ["biggest", "median"] as const) {
    const customer = picked[who].customer;
    const mine: Timed[] = [];
    const add = (kind: Timed["kind"], path: Timed["path"], fn: () => Promise<number>) =>
      mine.push({
        id: `${who}.${kind}${path === "tally" ? "" : `.${path}`}`,
        who,
        kind,
        path,
        run: fn,
        ms: [],
        rows: 0,
      });
    for (const k of kinds) {
      const req = k.request(customer);
      add(k.key, "tally", async () => {
        const r = await queryUsage(deps, req);
        lastAnswer.set(`${who}.${k.key}`, r);
        return r.data.length;
      });
      add(k.key, "raw", async () => (await queryUsage(rawDeps, req)).data.length);
      const bare = k.bare(customer);
      add(k.key, "bare", async () => (await queryRows(ch, bare)).length);
    }
    const plain = plainCount(customer);
    add("count_month", "bare", async () => (await queryRows(ch, plain)).length);
    cpu.begin();
    await measure(mine, a.runs, a.warmup, `${who} customer ${customer}`);
    cpuByPhase[`${who} customer`] = renameSelf(cpu.end());
    series.push(...mine);
  }

  // All customers, the close job's query: a handful of runs, each reported.
  progress(`all customers for the month (sum of tokens, no window): ${a.allRuns} runs each`);
  const all = {
    tally_ms: [] as (number | null)[],
    raw_ms: [] as number[],
    bare_ms: [] as number[],
    rows: 0,
    bare_rows: 0,
    error: null as string | null,
  };
  const allRec = recording(ch);
  cpu.begin();
  for (let i = 0; i < a.allRuns; i++) {
    let t = performance.now();
    if (all.error === null) {
      try {
        const r = await queryUsage({ ...deps, clickhouse: i === 0 ? allRec.client : ch }, allRequest);
        all.tally_ms.push(round(performance.now() - t, 1));
        all.rows = r.data.length;
      } catch (err: unknown) {
        all.tally_ms.push(null);
        all.error = err instanceof Error ? err.message : String(err);
        progress(
          `  queryUsage (all customers) failed after ${Math.round(performance.now() - t)} ms: ${all.error}`,
        );
        progress("  the remaining runs measure the bare query only");
      }
    }
    t = performance.now();
    await queryUsage(rawDeps, allRequest);
    all.raw_ms.push(round(performance.now() - t, 1));
    t = performance.now();
    all.bare_rows = (await queryRows(ch, allBare)).length;
    all.bare_ms.push(round(performance.now() - t, 1));
    progress(
      `  run ${i + 1}: queryUsage ${all.tally_ms[i] ?? "-"} ms, raw ${all.raw_ms[i]} ms, bare ${all.bare_ms[i]} ms`,
    );
  }
  cpuByPhase["all customers"] = renameSelf(cpu.end());
  tallySql.set("all", eventsSql(allRec.sql));
  const loadAfterTiming = os.loadavg();

  // Answers agree: the dedup count equals the distinct ids; the bare count includes the copies.
  const checks: Record<string, unknown> = {};
  for (const who of ["biggest", "median"] as const) {
    const c = picked[who].customer;
    const [d] = await queryRows<{ ids: string; rows: string }>(
      ch,
      `SELECT toString(uniqExact(id)) AS ids, toString(count()) AS rows FROM ${events} WHERE ${customerMonth(c)}`,
    );
    const answer = lastAnswer.get(`${who}.count_day`)!;
    const tallyCount = answer.data.reduce((s, r) => s + Number(r.value), 0);
    const days = answer.data.length;
    checks[who] = {
      tally_count: tallyCount,
      distinct_ids: Number(d?.ids),
      rows_with_copies: Number(d?.rows),
      days,
      ok: tallyCount === Number(d?.ids) && days === 31,
    };
  }

  // A live read: the current period has an open tail (events received after the rollup's
  // horizon). 1,000 events per measured customer in the month's last two hours, received now,
  // 2 of the biggest customer's rewritten the way the sink does (record, then copy); timed
  // round-robin against the raw path, then deleted again (the data dir stays reusable).
  const live = await liveTail(ch, deps, rawDeps, picked, Math.max(20, Math.floor(a.runs / 4)));

  // Anatomy on the server: the biggest customer's queries and two dedup variants.
  let anat: Anatomy[] = [];
  if (a.anatomyRuns > 0) {
    const c = picked.biggest.customer;
    // queryUsage's count_day SQL before 106057d: every id collapsed by GROUP BY id.
    const collapseAll = `SELECT ${dayBucket.replace("intDiv(ts", "intDiv(u_ts")} AS bucket, toString(count()) AS value,
  toString(count()) AS valid, toString(0) AS invalid
FROM (SELECT id AS u_id, any(customer) AS u_c, any(ts) AS u_ts, any('') AS u_v,
    match(u_v, ${lit("^-?[0-9]{1,20}(\\.[0-9]{1,9})?$")}) AS u_ok
  FROM ${events} WHERE ${customerMonth(c)} GROUP BY id)
GROUP BY bucket ORDER BY bucket LIMIT 100001`;
    const final = `SELECT ${dayBucket} AS bucket, toString(count()) AS value FROM ${events} FINAL
WHERE ${customerMonth(c)} GROUP BY bucket ORDER BY bucket`;
    const queries: [string, string][] = [
      ["count_month plain (no dedup)", plainCount(c)],
      ["count_day bare (no dedup)", kinds[0]!.bare(c)],
      ["count_day queryUsage SQL", tallySql.get("biggest.count_day")!],
      ["count_day collapse every id (queryUsage before 106057d)", collapseAll],
      ["count_day FINAL (collapse by sorting key)", final],
      ["sum_region_day bare (no dedup)", kinds[1]!.bare(c)],
      ["sum_region_day queryUsage SQL", tallySql.get("biggest.sum_region_day")!],
      ["unique_month bare (no dedup)", kinds[2]!.bare(c)],
      ["unique_month queryUsage SQL", tallySql.get("biggest.unique_month")!],
    ];
    progress(`anatomy (server side): ${queries.length} queries x ${a.anatomyRuns} runs for ${c}`);
    anat = await anatomy(ch, queries, a.anatomyRuns);
    const allSql = tallySql.get("all");
    if (all.error === null && allSql) {
      progress("anatomy: all customers, 1 run each");
      const allQueries: [string, string][] = [
        ["all customers queryUsage SQL (1 run)", allSql],
        ["all customers bare (no dedup, 1 run)", allBare],
      ];
      anat.push(...(await anatomy(ch, allQueries, 1)));
    }
  }

  const version = (await queryRows<{ v: string }>(ch, "SELECT version() AS v"))[0]?.v ?? "unknown";
  const byId = Object.fromEntries(series.map((s) => [s.id, { ...stats(s.ms), rows: s.rows }]));
  const p99 = Object.fromEntries(series.map((s) => [s.id, stats(s.ms).p99]));
  const tallyOne = series.filter((s) => s.path === "tally");
  const report = {
    bench: "usage",
    date: startedAt.toISOString(),
    target_p99_ms: targetP99Ms,
    target_met: {
      ...Object.fromEntries(tallyOne.map((s) => [s.id, stats(s.ms).p99 <= targetP99Ms])),
      all_customers: all.tally_ms.every((v) => v !== null && v <= targetAllMs),
    },
    target_all_customers_ms: targetAllMs,
    p99_ms: p99,
    rollup_fill_s: rollupFill,
    live_tail_ms: live,
    all_customers_ms: {
      queryUsage: all.tally_ms,
      queryUsage_rollup_off: all.raw_ms,
      bare: all.bare_ms,
      rows: all.rows,
      bare_rows: all.bare_rows,
      error: all.error,
    },
    dataset: {
      events: dataset.events,
      rows: dataset.rows,
      api_call_rows: dataset.apiCallRows,
      storage_rows: dataset.storageRows,
      duplicates_inserted: dataset.duplicatesInserted,
      duplicates_remaining: dataset.duplicatesRemaining,
      rewrite_records: dataset.rewriteRecords,
      customers: dataset.customers,
      month: "2026-10",
      parts: dataset.parts,
      bytes_on_disk: dataset.bytesOnDisk,
      bytes_uncompressed: dataset.bytesUncompressed,
      generation_s: round(dataset.generationS, 1),
      settle_s: round(dataset.settleS, 1),
      reused: dataset.reused,
    },
    customers: {
      biggest: { customer: picked.biggest.customer, api_call_rows: Number(picked.biggest.n) },
      median: { customer: picked.median.customer, api_call_rows: Number(picked.median.n) },
    },
    runs: a.runs,
    warmup_rounds: a.warmup,
    series: byId,
    checks,
    anatomy: anat,
    sql: Object.fromEntries(tallySql),
    cpu_cores_used: cpuByPhase,
    load_average: {
      at_start: loadAtStart.map((v) => round(v, 2)),
      before_timing: loadBeforeTiming.map((v) => round(v, 2)),
      after_timing: loadAfterTiming.map((v) => round(v, 2)),
    },
    machine_busy_before_cores: busyBefore,
    wall_s: round((performance.now() - t0) / 1000, 1),
    machine: machineInfo(version),
  };
  printReport(report, series, picked);
  console.log(JSON.stringify(report));
}

type LiveTail = Record<"biggest" | "median", { rollup: Stats; raw: Stats; same: boolean }>;

/** See the live-read step in `run`: inserts the tail, times both paths, deletes the tail. */
async function liveTail(
  ch: ClickHouseClient,
  deps: UsageDeps,
  rawDeps: UsageDeps,
  picked: Record<"biggest" | "median", { customer: string }>,
  runs: number,
): Promise<LiveTail> {
  const now = Date.now();
  const start = Date.UTC(2026, 9, 31, 21);
  for (const who of ["biggest", "median"] as const) {
    const c = lit(picked[who].customer);
    await ch.command({
      query: `INSERT INTO ${events} (customer, type, ts, id, received, source, prop_keys, prop_values)
SELECT ${c}, 'api_call', toInt64(${start} + number * 7000), concat('live-', ${c}, '-', toString(number)), ${now}, 'bench',
  ['tokens', 'region', 'user'], [toString(number % 100), concat('r', toString(number % 5)), concat('u', toString(number % 50))]
FROM numbers(1000)`,
    });
  }
  const copies = `id IN (${lit(`live-${picked.biggest.customer}-5`)}, ${lit(`live-${picked.biggest.customer}-7`)})`;
  await ch.command({
    query: `INSERT INTO ${ident(db)}.event_rewrites (customer, type, ts, id, recorded_at) SELECT customer, type, ts, id, now() FROM ${events} WHERE ${copies}`,
  });
  await ch.command({ query: `INSERT INTO ${events} SELECT * FROM ${events} WHERE ${copies}` });
  const out = {} as LiveTail;
  progress(`live read with an open tail: ${runs} runs each`);
  for (const who of ["biggest", "median"] as const) {
    const req = kinds[0]!.request(picked[who].customer);
    const ms = { rollup: [] as number[], raw: [] as number[] };
    let same = true;
    for (let i = 0; i < runs + 3; i++) {
      let t = performance.now();
      const a = await queryUsage(deps, req);
      const ta = performance.now() - t;
      t = performance.now();
      const b = await queryUsage(rawDeps, req);
      const tb = performance.now() - t;
      same &&= JSON.stringify(a.data) === JSON.stringify(b.data);
      if (i >= 3) {
        ms.rollup.push(ta);
        ms.raw.push(tb);
      }
    }
    out[who] = { rollup: stats(ms.rollup), raw: stats(ms.raw), same };
    progress(
      `  ${who}: p50/p99 ms queryUsage ${out[who].rollup.p50}/${out[who].rollup.p99}, rollup off ${out[who].raw.p50}/${out[who].raw.p99}, same answer ${same}`,
    );
  }
  // Remove the tail again (a mutation; waited for) so a rerun on this data dir starts alike.
  await ch.command({ query: `ALTER TABLE ${events} DELETE WHERE id LIKE 'live-%'` });
  await ch.command({ query: `ALTER TABLE ${ident(db)}.event_rewrites DELETE WHERE id LIKE 'live-%'` });
  for (let i = 0; i < 600; i++) {
    const [m] = await queryRows<{ n: string }>(
      ch,
      `SELECT toString(count()) AS n FROM system.mutations WHERE database = ${lit(db)} AND is_done = 0`,
    );
    if (m?.n === "0") break;
    await sleep(500);
  }
  return out;
}

/** CpuMeter names this process after the ingest bench's load generator; here it is the bench alone. */
function renameSelf(c: Record<string, number>): Record<string, number> {
  const { "bench+autocannon": self, ...rest } = c;
  return { ...rest, "bench (node)": self ?? NaN };
}

function machineInfo(clickhouse: string) {
  return {
    ...machineBase(),
    clickhouse_server: clickhouse,
  };
}

// --- Output -------------------------------------------------------------------------------------

type Report = {
  dataset: Record<string, number | string | boolean>;
  live_tail_ms: LiveTail;
  machine: ReturnType<typeof machineInfo>;
  all_customers_ms: {
    queryUsage: (number | null)[];
    queryUsage_rollup_off: number[];
    bare: number[];
    rows: number;
    bare_rows: number;
    error: string | null;
  };
  anatomy: Anatomy[];
  checks: Record<string, unknown>;
  cpu_cores_used: Record<string, Record<string, number>>;
  load_average: Record<string, number[]>;
  machine_busy_before_cores: number;
  runs: number;
};

function printReport(
  r: Report,
  series: readonly Timed[],
  picked: Record<"biggest" | "median", { customer: string; n: string }>,
): void {
  const m = r.machine;
  const d = r.dataset;
  console.log(
    `\nusage bench (git ${m.git}) — ${m.cores} cores (${m.cpu_model}), ${m.memory_gib} GiB, ` +
      `node ${m.node}, clickhouse ${m.clickhouse_server}`,
  );
  console.log(
    `data set: ${fmt(d.rows as number)} rows (${fmt(d.api_call_rows as number)} api_call, ${fmt(d.storage_rows as number)} storage; ` +
      `${fmt(d.duplicates_inserted as number)} second copies written, ${fmt(d.duplicates_remaining as number)} not merged away, ` +
      `${fmt(d.rewrite_records as number)} rewrite records) ` +
      `over ${String(d.month)}, ${fmt(d.customers as number)} customers; ${fmt((d.bytes_on_disk as number) / 1024 ** 3, 2)} GiB on disk ` +
      `(${fmt((d.bytes_uncompressed as number) / 1024 ** 3, 2)} GiB uncompressed), ${fmt(d.parts as number)} parts; ` +
      `generated in ${fmt(d.generation_s as number, 1)} s + ${fmt(d.settle_s as number, 1)} s merges` +
      (d.reused ? " (earlier run; reused)" : ""),
  );
  console.log(
    `customers: biggest ${picked.biggest.customer} (${fmt(Number(picked.biggest.n))} api_call events in the month), ` +
      `median ${picked.median.customer} (${fmt(Number(picked.median.n))})`,
  );
  console.log(
    `load average (1/5/15 min): start ${r.load_average.at_start!.join(" ")}, before timing ${r.load_average.before_timing!.join(" ")}, ` +
      `after timing ${r.load_average.after_timing!.join(" ")}; machine busy before start ${fmt(r.machine_busy_before_cores, 2)} cores`,
  );
  console.log(
    `\none customer's month, ${r.runs} timed runs each (ms, wall time in the client; target p99 <= ${targetP99Ms} ms via queryUsage)`,
  );
  const rows = [["customer", "query", "path", "rows", "p50", "p95", "p99", "max", "met", "p50 x bare"]];
  for (const s of series) {
    const st = stats(s.ms);
    const bare = series.find((b) => b.who === s.who && b.kind === s.kind && b.path === "bare");
    const label =
      s.kind === "count_month" ? "plain count(), month" : kinds.find((k) => k.key === s.kind)!.label;
    rows.push([
      s.who,
      label,
      s.path === "tally" ? "queryUsage" : s.path === "raw" ? "queryUsage, rollup off" : "bare SQL",
      fmt(s.rows),
      fmt(st.p50, 1),
      fmt(st.p95, 1),
      fmt(st.p99, 1),
      fmt(st.max, 1),
      s.path === "tally" ? (st.p99 <= targetP99Ms ? "yes" : "NO") : "",
      s.path === "tally" && bare ? fmt(st.p50 / stats(bare.ms).p50, 1) : "",
    ]);
  }
  console.log(table(rows));

  console.log(
    `\nlive read, count per Berlin day, with an open tail of 1,000 events received after the rollup's horizon (ms, p50 / p99)`,
  );
  console.log(
    table([
      ["customer", "queryUsage", "queryUsage, rollup off", "same answer"],
      ...(["biggest", "median"] as const).map((w) => {
        const x = r.live_tail_ms[w];
        return [
          w,
          `${fmt(x.rollup.p50, 1)} / ${fmt(x.rollup.p99, 1)}`,
          `${fmt(x.raw.p50, 1)} / ${fmt(x.raw.p99, 1)}`,
          String(x.same),
        ];
      }),
    ]),
  );

  const all = r.all_customers_ms;
  console.log(`\nall customers, month, sum of tokens, no window (ms per run)`);
  console.log(
    `  queryUsage: ${all.error !== null && all.queryUsage.every((v) => v === null) ? `FAILED: ${all.error}` : `${all.queryUsage.map((v) => (v === null ? "failed" : fmt(v))).join(", ")} (${fmt(all.rows)} rows)`}`,
  );
  const worst = Math.max(...all.queryUsage.map((v) => v ?? Infinity));
  console.log(
    `  target <= ${fmt(targetAllMs)} ms via queryUsage: ${worst <= targetAllMs ? "met" : "NOT met"} (slowest run ${fmt(worst)} ms)`,
  );
  console.log(`  queryUsage, rollup off: ${all.queryUsage_rollup_off.map((v) => fmt(v)).join(", ")}`);
  console.log(`  bare SQL:   ${all.bare.map((v) => fmt(v)).join(", ")} (${fmt(all.bare_rows)} rows)`);

  if (r.anatomy.length > 0) {
    console.log(`\nanatomy, biggest customer (server side from system.query_log, medians)`);
    console.log(
      table([
        ["query", "", "client p50", "server p50", "server max", "rows read", "MB read", "memory MB"],
        ...r.anatomy.map((x) => [
          x.name,
          "",
          fmt(x.client_p50_ms, 1),
          fmt(x.server_p50_ms),
          fmt(x.server_max_ms),
          fmt(x.read_rows),
          fmt(x.read_mb, 1),
          fmt(x.memory_mb, 1),
        ]),
      ]),
    );
  }
  console.log(`\nchecks (count via queryUsage = distinct ids): ${JSON.stringify(r.checks)}`);
  console.log(
    `CPU, cores used per phase ("other" = processes outside this bench): ${JSON.stringify(r.cpu_cores_used)}`,
  );
  console.log("");
}
