/**
 * Dedup ledger benchmark: the sink's ledger lookup (`lookupLedger`, what the partition worker
 * calls per flush) on ClickHouse 18.16 over a 40-day ledger of at least 100 million ids, with
 * and without the per-partition Bloom filter (src/sink/ledger-filter.ts).
 *
 *   npm run bench -- ledger [--ids 100000000] [--days 40] [--chunk 10000000] [--partitions 4]
 *                           [--flushes 200] [--warmup 10] [--settle 600] [--keep-data <dir>]
 *
 * 1. Starts clickhouse-server in a temp data dir (or `--keep-data <dir>`, kept afterwards: a rerun
 *    that finds the ledger filled there reuses it), creates the schema with `migrate()`.
 * 2. Fills `event_ids` inside ClickHouse (`INSERT ... SELECT ... FROM numbers()`, in chunks) with
 *    `--ids` rows whose first-seen times are spread evenly over the last `--days` days (one
 *    ledger partition per day), ids shaped like uuidv7 (48-bit ms timestamp of the first-seen
 *    time, then random hex: `0190f3a2-9c41-7abc-8def-0123456789ab`), random `bus_partition`
 *    (uniform over `--partitions`), fingerprints, 2,000 customers. Deterministic. Waits for
 *    merges (at most `--settle` s), records rows, parts and bytes on disk.
 * 3. Builds partition 0's filter with the sink's own `LedgerFilter` (count, then the ids streamed
 *    as RowBinary): build time, ids, memory.
 * 4. Flushes, `--flushes` timed runs each after `--warmup` untimed, round-robin over scenarios so
 *    other load on the machine hits them alike, each with the filter off and on:
 *    new ids (uuidv7 of now, the SDK's shape; and uuidv4, random over the whole key range)
 *    × 100 and 2,000 ids, and ids that exist (random ones of partition 0 over all 40 days, and
 *    ones first seen on the last day) × 100 and 2,000. Wall time of `lookupLedger` (HTTP and
 *    JSON included) and clickhouse-server CPU per flush (from /proc, 10 ms ticks, averaged).
 * 5. The filter alone: adds/s and lookups/s over 2M in-memory ids, and the measured
 *    false-positive rate over 1M new ids.
 * 6. Prints a table and, as the last stdout line, one JSON object. Progress goes to stderr.
 */
import { randomBytes, randomUUID } from "node:crypto";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { uuidv7 } from "uuidv7";
import {
  createClickHouse,
  ident,
  migrate,
  queryRows,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import { startClickHouse, type ServerProcess } from "../src/dev/servers.js";
import { createLogger } from "../src/observability/index.js";
import { BloomFilter } from "../src/sink/bloom.js";
import { LedgerFilter, lookupLedger } from "../src/sink/ledger-filter.js";
import { benchDataDir, intArg, keepDataArg } from "./lib/args.js";
import { Cleanup } from "./lib/children.js";
import { cpuSeconds, machineCoresBusy, memoryMiB, round } from "./lib/proc.js";
import { fmt, machineBase, progressLog, table } from "./lib/report.js";

const progress = progressLog("ledger");
const db = "bench_ledger";

interface Args {
  ids: number;
  days: number;
  chunk: number;
  partitions: number;
  flushes: number;
  warmup: number;
  settle: number;
  keepData: string | null;
}

function parseArgs(args: string[]): Args {
  return {
    ids: intArg(args, "ids", 100_000_000, 1000),
    days: intArg(args, "days", 40, 1),
    chunk: intArg(args, "chunk", 10_000_000, 1000),
    partitions: intArg(args, "partitions", 4, 1),
    flushes: intArg(args, "flushes", 200, 1),
    warmup: intArg(args, "warmup", 10, 0),
    settle: intArg(args, "settle", 600, 0),
    keepData: keepDataArg(args),
  };
}

export async function main(args: string[]): Promise<void> {
  const a = parseArgs(args);
  const cleanup = new Cleanup();
  try {
    await run(a, cleanup);
  } finally {
    await cleanup.run(60_000);
  }
}

/** Midnight UTC `days` days before today: the first first-seen day of the data set. */
function firstDayMs(days: number): number {
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  return today - days * 86_400_000;
}

/** Rows `[from, from + count)` of the data set, generated inside ClickHouse. */
function fillSql(a: Args, startMs: number, from: number, count: number): string {
  const spanMs = a.days * 86_400_000;
  return `INSERT INTO ${ident(db)}.event_ids (id, customer, type, ts, fp, bus_partition, seen_day)
SELECT id, customer, 'api_call', ts, fp, bus_partition, toDate(toDateTime(intDiv(ts, 1000), 'UTC')) FROM (
  SELECT number + ${from} AS n,
    toInt64(${startMs}) + toInt64(intDiv(n * ${spanMs}, ${a.ids})) AS ts,
    hex(toUInt64(ts)) AS t,
    hex(bitOr(sipHash64(n), toUInt64(9223372036854775808))) AS r1,
    hex(bitOr(sipHash64(n + 1000000000000), toUInt64(9223372036854775808))) AS r2,
    lower(concat(substring(t, 1, 8), '-', substring(t, 9, 4), '-7', substring(r1, 2, 3), '-',
      substring(r1, 5, 4), '-', substring(r2, 2, 12))) AS id,
    concat('cust-', toString(sipHash64(n + 2000000000000) % 2000)) AS customer,
    lower(hex(bitOr(sipHash64(n + 3000000000000), toUInt64(9223372036854775808)))) AS fp,
    toUInt16(sipHash64(n + 4000000000000) % ${a.partitions}) AS bus_partition
  FROM numbers(${count})
)`;
}

interface Dataset {
  rows: number;
  parts: number;
  days: number;
  bytesOnDisk: number;
  fillSeconds: number | null;
}

async function ensureDataset(ch: ClickHouseClient, a: Args): Promise<Dataset> {
  await migrate(ch, db);
  const count = async () =>
    Number(
      (await queryRows<{ n: string }>(ch, `SELECT toString(count()) AS n FROM ${ident(db)}.event_ids`))[0]?.n,
    );
  let have = await count();
  let fillSeconds: number | null = null;
  if (have !== 0 && have !== a.ids) {
    progress(`ledger holds ${have} rows, not ${a.ids}: refilling`);
    await ch.command({ query: `TRUNCATE TABLE ${ident(db)}.event_ids` });
    have = 0;
  }
  if (have === 0) {
    const startMs = firstDayMs(a.days);
    const t0 = performance.now();
    for (let from = 0; from < a.ids; from += a.chunk) {
      const n = Math.min(a.chunk, a.ids - from);
      await ch.command({ query: fillSql(a, startMs, from, n), clickhouse_settings: { max_threads: 2 } });
      progress(`filled ${(from + n).toLocaleString("en-US")} / ${a.ids.toLocaleString("en-US")} ids`);
    }
    fillSeconds = (performance.now() - t0) / 1000;
    const deadline = performance.now() + a.settle * 1000;
    while (performance.now() < deadline) {
      const [m] = await queryRows<{ n: string }>(
        ch,
        `SELECT toString(count()) AS n FROM system.merges WHERE database = '${db}'`,
      );
      if (Number(m?.n) === 0) break;
      await sleep(2000);
    }
  } else {
    progress(`reusing the ledger in the kept data dir (${have.toLocaleString("en-US")} rows)`);
  }
  const [parts] = await queryRows<{ parts: string; bytes: string; days: string }>(
    ch,
    `SELECT toString(count()) AS parts, toString(sum(bytes_on_disk)) AS bytes, toString(uniqExact(partition)) AS days
FROM system.parts WHERE database = '${db}' AND table = 'event_ids' AND active`,
  );
  return {
    rows: await count(),
    parts: Number(parts?.parts),
    days: Number(parts?.days),
    bytesOnDisk: Number(parts?.bytes),
    fillSeconds,
  };
}

interface Scenario {
  name: string;
  ids: () => string[];
  filter: boolean;
  ms: number[];
  chCpuS: number;
  found: number;
  asked: number;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function uuidv4Like(): string {
  return randomUUID();
}

async function run(a: Args, cleanup: Cleanup): Promise<void> {
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const busyBefore = await machineCoresBusy(2000);
  if (busyBefore > 0.2) progress(`WARNING: the machine is already busy (${busyBefore} cores used by others)`);

  const { dir: dataDir, existed } = benchDataDir(a.keepData, "ledger", cleanup);
  if (a.keepData !== null) progress(`data dir (kept): ${dataDir}${existed ? " (exists)" : ""}`);
  progress("starting clickhouse-server");
  const server: ServerProcess = await startClickHouse({ dataDir });
  cleanup.add("stop clickhouse-server", () => server.stop(30_000));
  const chPid = server.process.pid ?? 0;
  const ch = createClickHouse(
    { url: server.url, user: "default", password: "", database: db, timeoutMs: 60 * 60_000 },
    4,
  );
  cleanup.add("close ClickHouse client", () => ch.close());
  const [ver] = await queryRows<{ v: string }>(ch, "SELECT version() AS v");

  const dataset = await ensureDataset(ch, a);
  progress(
    `ledger: ${dataset.rows.toLocaleString("en-US")} ids, ${dataset.days} days, ${dataset.parts} parts, ` +
      `${(dataset.bytesOnDisk / 1024 ** 3).toFixed(2)} GiB on disk`,
  );

  // Ids that exist: random ones of partition 0 over all days, and ones first seen on the last day.
  const table0 = `${ident(db)}.event_ids`;
  const existingAll = (
    await queryRows<{ id: string }>(
      ch,
      `SELECT id FROM ${table0} WHERE bus_partition = 0 AND sipHash64(id) % 1000 = 7 LIMIT 100000`,
    )
  ).map((r) => r.id);
  const existingRecent = (
    await queryRows<{ id: string }>(
      ch,
      `SELECT id FROM ${table0} WHERE bus_partition = 0 AND seen_day = (SELECT max(seen_day) FROM ${table0})
AND sipHash64(id) % 20 = 3 LIMIT 100000`,
    )
  ).map((r) => r.id);
  progress(
    `sampled ${existingAll.length} existing ids over all days, ${existingRecent.length} of the last day`,
  );

  // Partition 0's filter, built by the sink's own class.
  const heapBefore = process.memoryUsage().arrayBuffers;
  const rssBefore = memoryMiB(process.pid)?.rss ?? 0;
  const chCpu0 = cpuSeconds(chPid) ?? 0;
  const selfCpu0 = process.cpuUsage();
  const t0 = performance.now();
  const lf = new LedgerFilter({
    ch,
    db,
    partition: 0,
    log: createLogger("bench", "warn"),
    settleMs: 0,
  }).start();
  cleanup.add("stop filter", () => Promise.resolve(lf.stop()));
  while (!lf.ready) await sleep(20);
  const build = {
    seconds: round((performance.now() - t0) / 1000, 2),
    ids: lf.filter!.added,
    capacity: lf.filter!.capacity,
    hashes: lf.filter!.hashes,
    filter_mib: round(lf.filter!.bytes / 1024 ** 2, 1),
    array_buffers_mib: round((process.memoryUsage().arrayBuffers - heapBefore) / 1024 ** 2, 1),
    rss_growth_mib: round((memoryMiB(process.pid)?.rss ?? 0) - rssBefore, 0),
    clickhouse_cpu_s: round((cpuSeconds(chPid) ?? 0) - chCpu0, 1),
    node_cpu_s: round((process.cpuUsage(selfCpu0).user + process.cpuUsage(selfCpu0).system) / 1e6, 1),
  };
  progress(`filter of partition 0 built: ${JSON.stringify(build)}`);

  let rAll = 0;
  let rRecent = 0;
  const pick = (from: string[], n: number, cursor: "all" | "recent") => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const k = cursor === "all" ? rAll++ : rRecent++;
      out.push(from[k % from.length]!);
    }
    return out;
  };
  const gens: { name: string; ids: () => string[] }[] = [
    { name: "new uuidv7 x100", ids: () => Array.from({ length: 100 }, () => uuidv7()) },
    { name: "new uuidv7 x2000", ids: () => Array.from({ length: 2000 }, () => uuidv7()) },
    { name: "new uuidv4 x100", ids: () => Array.from({ length: 100 }, uuidv4Like) },
    { name: "new uuidv4 x2000", ids: () => Array.from({ length: 2000 }, uuidv4Like) },
    { name: "existing (40 days) x100", ids: () => pick(existingAll, 100, "all") },
    { name: "existing (40 days) x2000", ids: () => pick(existingAll, 2000, "all") },
    { name: "existing (last day) x2000", ids: () => pick(existingRecent, 2000, "recent") },
  ];
  const scenarios: Scenario[] = gens.flatMap((g) =>
    [false, true].map((filter) => ({ ...g, filter, ms: [], chCpuS: 0, found: 0, asked: 0 })),
  );
  const loadBeforeTiming = os.loadavg();
  progress(`timing ${scenarios.length} scenarios x ${a.flushes} flushes (+${a.warmup} warmup), round-robin`);
  for (let i = 0; i < a.warmup + a.flushes; i++) {
    for (const s of scenarios) {
      const ids = s.ids();
      const c0 = cpuSeconds(chPid) ?? 0;
      const t = performance.now();
      const known = await lookupLedger(ch, db, ids, s.filter ? lf : null);
      const ms = performance.now() - t;
      if (i < a.warmup) continue;
      s.ms.push(ms);
      s.chCpuS += (cpuSeconds(chPid) ?? 0) - c0;
      s.found += known.size;
      s.asked += s.filter ? ids.filter((id) => lf.mayContain(id)).length : ids.length;
    }
    if ((i + 1) % 50 === 0) progress(`${i + 1} rounds`);
  }
  const loadAfterTiming = os.loadavg();

  // The filter alone.
  const n = 2_000_000;
  const mem = Array.from({ length: n }, () => uuidv7());
  const bf = new BloomFilter(n);
  let t = performance.now();
  for (const id of mem) bf.add(id);
  const addsPerS = n / ((performance.now() - t) / 1000);
  t = performance.now();
  let hits = 0;
  for (const id of mem) if (bf.mayContain(id)) hits++;
  const lookupsPerS = n / ((performance.now() - t) / 1000);
  if (hits !== n) throw new Error(`false negatives in the in-memory filter: ${n - hits}`);
  let fp = 0;
  const probes = 1_000_000;
  for (let i = 0; i < probes; i++) if (lf.mayContain(randomBytes(16).toString("hex"))) fp++;
  const micro = {
    adds_per_s: Math.round(addsPerS),
    lookups_per_s: Math.round(lookupsPerS),
    measured_fp_rate_partition0: fp / probes,
    expected_fp_rate_partition0: lf.filter!.expectedFalsePositiveRate(),
  };

  const rows = [
    [
      "scenario",
      "filter",
      "p50 ms",
      "p90 ms",
      "p99 ms",
      "max ms",
      "CH cpu ms/flush",
      "asked/flush",
      "found/flush",
    ],
  ];
  const results = scenarios.map((s) => {
    const sorted = [...s.ms].sort((x, y) => x - y);
    const r = {
      scenario: s.name,
      filter: s.filter ? "on" : "off",
      p50_ms: round(pct(sorted, 50), 2),
      p90_ms: round(pct(sorted, 90), 2),
      p99_ms: round(pct(sorted, 99), 2),
      max_ms: round(sorted[sorted.length - 1] ?? NaN, 2),
      clickhouse_cpu_ms_per_flush: round((s.chCpuS * 1000) / s.ms.length, 2),
      asked_per_flush: round(s.asked / s.ms.length, 1),
      found_per_flush: round(s.found / s.ms.length, 1),
    };
    rows.push([
      r.scenario,
      r.filter,
      fmt(r.p50_ms, 2),
      fmt(r.p90_ms, 2),
      fmt(r.p99_ms, 2),
      fmt(r.max_ms, 2),
      fmt(r.clickhouse_cpu_ms_per_flush, 1),
      fmt(r.asked_per_flush, 1),
      fmt(r.found_per_flush, 1),
    ]);
    return r;
  });
  const report = {
    bench: "ledger",
    started_at: startedAt.toISOString(),
    machine: machineBase(),
    clickhouse: ver?.v,
    args: a,
    load_avg: { at_start: loadAtStart, before_timing: loadBeforeTiming, after_timing: loadAfterTiming },
    busy_cores_by_others_at_start: busyBefore,
    dataset,
    build_partition0: build,
    filter_alone: micro,
    lookups: results,
  };
  process.stdout.write(`${table(rows, 2)}\n\n`);
  process.stdout.write(`filter build (partition 0): ${JSON.stringify(build)}\n`);
  process.stdout.write(`filter alone: ${JSON.stringify(micro)}\n\n`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
