/**
 * Close benchmark: the billing close (snapshot → rate → store drafts → finalize with gapless
 * numbers; no push) of `--customers` subscriptions with 5 metered prices each, over `--events`
 * usage events in ClickHouse 18.16, run as the real `tally close --once` process; then the same
 * close again from scratch with a SIGKILL midway and a restart, checked for exactly-once.
 *
 *   npm run bench -- close [--events 100000000] [--customers 100000] [--chunk 10000000]
 *                          [--keep-data <dir>] [--settle 900] [--generate-only] [--skip-kill]
 *
 * 1. Starts clickhouse-server (data in a temp dir, or `--keep-data <dir>`: a rerun that finds the
 *    same data set there reuses it) and generates the events inside ClickHouse (`INSERT ... SELECT
 *    ... FROM numbers(N)`, deterministic): one month (2026-10, UTC) of `api_call` (70%),
 *    `compute` (20%) and `storage` (10%) events of `--customers` customers (uniform), unique ids,
 *    plus 0.1% of them written a second time the way the sink rewrites after a crash (a record in
 *    `event_rewrites`, then the identical row), so the close's reads have real dedup work.
 * 2. Starts a fresh nats-server and applies the catalog through `CatalogStore.applyDocument` (what
 *    `tally catalog apply` does): 5 meters (count, sum, unique_count, max, sum over three event
 *    types), one monthly USD plan with a flat fee and 5 metered prices (graduated tiers, volume
 *    tiers, included quantities), the customers (UTC) and one subscription each, started
 *    2026-10-01. Timed.
 * 3. Run A: `tally close --once --json` as a child process (the close role's own code path: the
 *    leader lease, the watermark, `closeDue`); timed wall and CPU (the close process, ClickHouse,
 *    NATS). Checks every subscription got exactly one finalized invoice numbered 1..N.
 * 4. Run B (unless `--skip-kill`): the invoices bucket is deleted, the close started again and
 *    SIGKILLed once about half of the invoices are finalized; a second `tally close --once`
 *    finishes. Checks: exactly N invoices, numbers 1..N without gap or repeat, and every total
 *    equal to run A's.
 * 5. Prints a table and, as the last stdout line, one JSON object. Progress goes to stderr.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection } from "nats";
import { InvoiceStore } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { CatalogStore, validateCatalogDocument } from "../src/catalog/index.js";
import { parseCatalogText } from "../src/catalog/file.js";
import {
  createClickHouse,
  ident,
  lit,
  migrate,
  queryRows,
  sql,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import { startClickHouse, startNats, type ServerProcess } from "../src/dev/servers.js";
import { benchDataDir, intArg, keepDataArg } from "./lib/args.js";
import { Cleanup, spawnChild, type Child } from "./lib/children.js";
import { cpuSeconds, round } from "./lib/proc.js";
import { fmt, machineBase, progressLog, table } from "./lib/report.js";

const progress = progressLog("close");

const db = "close_bench";
/** Bumped whenever the generator changes, so a kept data dir from an older one is regenerated. */
const generatorVersion = 1;
/** Every `dupEvery`-th event (n % dupEvery = 7) is written twice, announced in event_rewrites. */
const dupEvery = 1000;
const monthStartUtc = Date.UTC(2026, 9, 1);
const monthEndUtc = Date.UTC(2026, 10, 1);
/** The issue's target for the whole close of 100,000 subscriptions over 100M events. */
const targetS = 60;

interface Args {
  events: number;
  customers: number;
  chunk: number;
  settleS: number;
  keepData: string | null;
  generateOnly: boolean;
  skipKill: boolean;
}

function parseArgs(args: readonly string[]): Args {
  const valued = new Set(["--events", "--customers", "--chunk", "--settle", "--keep-data"]);
  const flags = new Set(["--generate-only", "--skip-kill"]);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (valued.has(a)) i++;
    else if (!flags.has(a))
      throw new Error(`unknown option ${a}; options: ${[...valued, ...flags].join(" ")}`);
  }
  const num = (name: string, fallback: number, min: number) => intArg(args, name, fallback, min);
  return {
    events: num("events", 100_000_000, 10_000),
    customers: num("customers", 100_000, 1),
    chunk: num("chunk", 10_000_000, 10_000),
    settleS: num("settle", 900, 0),
    keepData: keepDataArg(args),
    generateOnly: args.includes("--generate-only"),
    skipKill: args.includes("--skip-kill"),
  };
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

// --- Data set -----------------------------------------------------------------------------------

const customerKey = (i: number) => `c${String(1_000_000 + i).slice(1)}`;

/**
 * One event per `n` of `source` (a query yielding column `n`), a pure function of `n`, so
 * duplicates are the same rows again. Customers are uniform over `customers` (c000000, ...),
 * times uniform over the month in random order (what an ingest stream of many customers looks
 * like), received a few seconds after their time.
 */
function generatorSql(source: string, customers: number): string {
  const monthMs = monthEndUtc - monthStartUtc;
  return `SELECT customer, type, ts, id, received, source, prop_keys, prop_values FROM (
  SELECT n,
    intHash64(n * 3) AS h0, intHash64(n * 3 + 1) AS h1, intHash64(n * 3 + 2) AS h2,
    concat('c', substring(toString(1000000 + h0 % ${customers}), 2)) AS customer,
    h1 % 10 AS kind,
    multiIf(kind = 0, 'storage', kind < 3, 'compute', 'api_call') AS type,
    ${monthStartUtc} + toInt64(h2 % ${monthMs}) AS ts,
    concat('e', toString(n)) AS id,
    ts + 5 + toInt64(intDiv(h2, ${monthMs}) % 3000) AS received,
    'sdk' AS source,
    arrayElement(['eu-west-1', 'us-east-1', 'ap-south-1'], intDiv(h1, 10) % 3 + 1) AS region,
    multiIf(kind = 0, ['gb'], kind < 3, ['seconds', 'region'], ['tokens', 'region', 'user']) AS prop_keys,
    multiIf(kind = 0, [concat(toString(intDiv(h1, 10) % 500), '.', toString(intDiv(h1, 7) % 10))],
      kind < 3, [concat(toString(intDiv(h1, 10) % 120), '.5'), region],
      [toString(intDiv(h1, 10) % 2000), region, concat('u', toString(intDiv(h0, 7) % 25))]) AS prop_values
  FROM (${source})
)`;
}

const duplicates = (n: number) => Math.floor((n - 8) / dupEvery) + 1;
const dupSource = (n: number) => `SELECT number * ${dupEvery} + 7 AS n FROM numbers(${duplicates(n)})`;
const infoTable = `${ident(db)}.bench_dataset`;

interface Dataset {
  reused: boolean;
  generationS: number;
  rows: number;
  bytesOnDisk: number;
}

async function ensureDataset(ch: ClickHouseClient, a: Args): Promise<Dataset> {
  const [known] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM system.tables WHERE database = ${lit(db)} AND name = 'bench_dataset'`,
  );
  const prior =
    known?.n === "1"
      ? await queryRows<{ events: string; customers: string; generator: string; generation_s: number }>(
          ch,
          `SELECT toString(events) AS events, toString(customers) AS customers, toString(generator) AS generator, generation_s FROM ${infoTable}`,
        )
      : [];
  const p = prior[0];
  let generationS: number;
  let reused = false;
  if (
    p !== undefined &&
    Number(p.events) === a.events &&
    Number(p.customers) === a.customers &&
    Number(p.generator) === generatorVersion
  ) {
    progress(`reusing the data set in the data dir (${a.events.toLocaleString("en-US")} events)`);
    generationS = Number(p.generation_s);
    reused = true;
    await migrate(ch, db);
  } else {
    if (p !== undefined) progress("the data dir holds another data set: generating a new one");
    await ch.command({ query: `DROP DATABASE IF EXISTS ${ident(db)}` });
    await migrate(ch, db);
    const t0 = performance.now();
    const chunks = Math.ceil(a.events / a.chunk);
    for (let i = 0; i < chunks; i++) {
      const offset = i * a.chunk;
      const count = Math.min(a.chunk, a.events - offset);
      const t = performance.now();
      await ch.command({
        query: `INSERT INTO ${sql.eventsTable(db)} ${generatorSql(`SELECT number + ${offset} AS n FROM numbers(${count})`, a.customers)}`,
      });
      progress(
        `  chunk ${i + 1}/${chunks}: ${count.toLocaleString("en-US")} rows in ${((performance.now() - t) / 1000).toFixed(1)} s`,
      );
    }
    // As the sink does it: the record of a rewrite first, then the identical second copy.
    await ch.command({
      query: `INSERT INTO ${sql.rewritesTable(db)} (customer, type, ts, id, recorded_at)
SELECT customer, type, ts, id, now() FROM (${generatorSql(dupSource(a.events), a.customers)})`,
    });
    await ch.command({
      query: `INSERT INTO ${sql.eventsTable(db)} ${generatorSql(dupSource(a.events), a.customers)}`,
    });
    generationS = (performance.now() - t0) / 1000;
    progress(`generated in ${generationS.toFixed(1)} s; waiting for background merges`);
    await settle(ch, a.settleS);
    await ch.command({
      query: `CREATE TABLE ${infoTable} (events UInt64, customers UInt64, generator UInt32, generation_s Float64, created DateTime) ENGINE = TinyLog`,
    });
    await ch.command({
      query: `INSERT INTO ${infoTable} VALUES (${lit(a.events)}, ${lit(a.customers)}, ${lit(generatorVersion)}, ${lit(generationS)}, now())`,
    });
  }
  const [d] = await queryRows<{ rows: string; bytes: string }>(
    ch,
    `SELECT toString(sum(rows)) AS rows, toString(sum(bytes_on_disk)) AS bytes FROM system.parts
WHERE database = ${lit(db)} AND table = 'events' AND active`,
  );
  return { reused, generationS, rows: Number(d?.rows ?? 0), bytesOnDisk: Number(d?.bytes ?? 0) };
}

/** Waits until no merge ran on the database for three polls in a row, or `maxS` passed. */
async function settle(ch: ClickHouseClient, maxS: number): Promise<void> {
  const deadline = performance.now() + maxS * 1000;
  let quiet = 0;
  while (performance.now() < deadline && quiet < 3) {
    const [r] = await queryRows<{ merges: string }>(
      ch,
      `SELECT toString(count()) AS merges FROM system.merges WHERE database = ${lit(db)}`,
    );
    quiet = r?.merges === "0" ? quiet + 1 : 0;
    await sleep(2000);
  }
  if (quiet < 3) progress(`WARNING: merges still running after ${maxS} s; measuring anyway`);
}

// --- Catalog ------------------------------------------------------------------------------------

const meters = `
meters:
  - { key: api_calls, event_type: api_call, aggregation: count }
  - { key: tokens, event_type: api_call, aggregation: sum, value_property: tokens }
  - { key: active_users, event_type: api_call, aggregation: unique_count, value_property: user }
  - { key: storage_gb, event_type: storage, aggregation: max, value_property: gb }
  - { key: compute_seconds, event_type: compute, aggregation: sum, value_property: seconds }
plans:
  - key: usage
    name: Usage (monthly)
    currency: usd
    interval: month
    prices:
      - { key: platform, type: flat, unit_amount: 4900 }
      - key: api_calls
        type: metered
        meter: api_calls
        included_quantity: 100
        billing_scheme: tiered
        tiers_mode: graduated
        tiers:
          - { up_to: 500, unit_amount_decimal: "0.5" }
          - { up_to: inf, unit_amount_decimal: "0.2" }
      - key: tokens
        type: metered
        meter: tokens
        billing_scheme: tiered
        tiers_mode: volume
        tiers:
          - { up_to: 100000, unit_amount_decimal: "0.01" }
          - { up_to: inf, unit_amount_decimal: "0.005" }
      - { key: active_users, type: metered, meter: active_users, unit_amount: 300 }
      - { key: storage_gb, type: metered, meter: storage_gb, unit_amount_decimal: "2.5" }
      - { key: compute_seconds, type: metered, meter: compute_seconds, unit_amount_decimal: "0.1" }
`;

async function applyCatalog(nc: NatsConnection, prefix: string, customers: number): Promise<number> {
  const started = new Date(monthStartUtc).toISOString();
  const doc = {
    ...(parseCatalogText(meters) as Record<string, unknown>),
    customers: Array.from({ length: customers }, (_, i) => ({
      key: customerKey(i),
      name: `Customer ${i}`,
      currency: "usd",
      timezone: "UTC",
    })),
    subscriptions: Array.from({ length: customers }, (_, i) => ({
      key: `sub-${customerKey(i)}`,
      customer: customerKey(i),
      plan: "usage",
      started_at: started,
    })),
  };
  const js = nc.jetstream();
  const catalog = await CatalogStore.open(js, busNames(prefix).catalogBucket, 1);
  await catalog.start();
  const parsed = validateCatalogDocument(doc, catalog.lookup());
  const t = performance.now();
  await catalog.applyDocument(parsed);
  const s = (performance.now() - t) / 1000;
  await catalog.close();
  return s;
}

// --- Runs ---------------------------------------------------------------------------------------

interface Servers {
  ch: ServerProcess;
  nats: ServerProcess;
  env: NodeJS.ProcessEnv;
  prefix: string;
}

/** What one `tally close --once` run printed and cost. */
interface CloseRun {
  /** From spawning the process to its exit (connecting, loading the catalog, the close). */
  wallS: number;
  /** The close itself, as the process logged it (`close run`); null when killed. */
  closeS: number | null;
  /** The close's `close round` log lines: wall ms and phase ms (snapshot, rate, store, finalize). */
  rounds: { ms: number | undefined; phases: Record<string, number> | undefined }[];
  closeCpuS: number;
  clickhouseCpuS: number;
  natsCpuS: number;
  finalized: number;
  errors: number;
  killed: boolean;
}

const cli = resolve("dist/src/cli/main.js");
/** Extra node flags for the close process, e.g. `BENCH_CLOSE_NODE_ARGS=--cpu-prof` to profile it. */
const nodeArgs = (process.env.BENCH_CLOSE_NODE_ARGS ?? "").split(" ").filter(Boolean);

/**
 * Runs `tally close --once --json`; with `killAtFinalized`, SIGKILLs it once that many invoices
 * are finalized (polled through the invoice summaries, as `tally invoices list` reads them).
 */
async function closeOnce(
  s: Servers,
  cleanup: Cleanup,
  invoices: InvoiceStore,
  killAtFinalized?: number,
): Promise<CloseRun> {
  const cpu0 = { ch: cpuSeconds(s.ch.process.pid ?? 0) ?? 0, nats: cpuSeconds(s.nats.process.pid ?? 0) ?? 0 };
  const t0 = performance.now();
  let out = "";
  const child: Child = spawnChild(
    "tally close",
    process.execPath,
    [...nodeArgs, cli, "close", "--once", "--json"],
    {
      env: s.env,
      onLine: (l) => (out += `${l}\n`),
    },
  );
  cleanup.add("stop tally close", () => child.stop(2000));
  let closeCpu = 0;
  let killed = false;
  const sampler = setInterval(() => (closeCpu = cpuSeconds(child.pid) ?? closeCpu), 250);
  if (killAtFinalized !== undefined) {
    const index = await invoices.index();
    while (child.running()) {
      const done = index.list({ status: "finalized" }, killAtFinalized).data.length;
      if (done >= killAtFinalized) {
        closeCpu = cpuSeconds(child.pid) ?? closeCpu;
        process.kill(child.pid, "SIGKILL");
        killed = true;
        break;
      }
      await sleep(50);
    }
    index.stop();
  }
  const code = await child.exited;
  clearInterval(sampler);
  const wallS = (performance.now() - t0) / 1000;
  if (!killed && code !== "0") throw new Error(`tally close exited ${code}:\n${child.output()}`);
  let finalized = 0;
  let errors = 0;
  const logged = out
    .split("\n")
    .filter((l) => l.startsWith('{"level"'))
    .map((l) => JSON.parse(l) as { msg?: string; ms?: number; phases_ms?: Record<string, number> });
  const closeRun = logged.find((l) => l.msg === "close run");
  // Per round: phase times summed over its chunks (the next chunk's snapshot overlaps the rest).
  const rounds = logged
    .filter((l) => l.msg === "close round")
    .map((l) => ({ ms: l.ms, phases: l.phases_ms }));
  if (!killed) {
    // The report is pretty-printed JSON after any log lines (JSON, one per line).
    const report = JSON.parse(out.slice(out.indexOf("\n{\n") + 1) || "{}") as {
      finalized?: string[];
      errors?: unknown[];
    };
    finalized = report.finalized?.length ?? 0;
    errors = report.errors?.length ?? 0;
    if (errors > 0) progress(`close reported errors: ${JSON.stringify(report.errors?.slice(0, 3))}`);
  }
  return {
    wallS,
    closeS: closeRun?.ms === undefined ? null : closeRun.ms / 1000,
    rounds,
    closeCpuS: closeCpu,
    clickhouseCpuS: (cpuSeconds(s.ch.process.pid ?? 0) ?? 0) - cpu0.ch,
    natsCpuS: (cpuSeconds(s.nats.process.pid ?? 0) ?? 0) - cpu0.nats,
    finalized,
    errors,
    killed,
  };
}

/** Every invoice in the bucket: id → (number, total, status). */
async function readInvoices(
  invoices: InvoiceStore,
): Promise<Map<string, { number: string | null; total: number; status: string }>> {
  const index = await invoices.index();
  const out = new Map<string, { number: string | null; total: number; status: string }>();
  let after: { period_start: string; id: string } | undefined;
  for (;;) {
    const page = index.list({}, 10_000, after);
    for (const s of page.data) out.set(s.id, { number: s.number, total: s.total, status: s.status });
    if (page.next === null) break;
    after = page.next;
  }
  index.stop();
  return out;
}

/** Exactly one finalized invoice per subscription, numbered 1..n without gap or repeat. */
function checkExactlyOnce(
  invoices: Map<string, { number: string | null; total: number; status: string }>,
  subscriptions: number,
): string[] {
  const problems: string[] = [];
  if (invoices.size !== subscriptions)
    problems.push(`${invoices.size} invoices for ${subscriptions} subscriptions`);
  const numbers = new Set<number>();
  for (const [id, inv] of invoices) {
    if (inv.status !== "finalized") problems.push(`${id} is ${inv.status}`);
    const n = Number(inv.number?.slice(inv.number.lastIndexOf("-") + 1));
    if (numbers.has(n)) problems.push(`number ${n} used twice`);
    numbers.add(n);
  }
  for (let n = 1; n <= subscriptions; n++) if (!numbers.has(n)) problems.push(`number ${n} missing`);
  return problems.slice(0, 10);
}

async function run(a: Args, cleanup: Cleanup): Promise<void> {
  const { dir: dataDir } = benchDataDir(a.keepData, "close", cleanup);
  const chServer = await startClickHouse({ dataDir });
  cleanup.add("stop clickhouse-server", () => chServer.stop(30_000));
  const ch = createClickHouse(
    { url: chServer.url, user: "default", password: "", database: "default", timeoutMs: 3_600_000 },
    4,
  );
  cleanup.add("close ClickHouse client", () => ch.close());
  const dataset = await ensureDataset(ch, a);
  progress(
    `data set: ${dataset.rows.toLocaleString("en-US")} rows, ${fmt(dataset.bytesOnDisk / 2 ** 30, 1)} GiB on disk`,
  );
  if (a.generateOnly) return;

  // NATS: fresh every run (the catalog and the invoices are what is measured).
  const natsDir = mkdtempSync(join(os.tmpdir(), "tally-bench-close-nats-"));
  cleanup.add("remove NATS dir", () => Promise.resolve(rmSync(natsDir, { recursive: true, force: true })));
  const nats = await startNats({ dataDir: natsDir });
  cleanup.add("stop nats-server", () => nats.stop());
  const prefix = "bench";
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TALLY_NATS_URL: nats.url,
    TALLY_NATS_PREFIX: prefix,
    TALLY_CLICKHOUSE_URL: chServer.url,
    TALLY_CLICKHOUSE_DATABASE: db,
    TALLY_CLICKHOUSE_TIMEOUT_MS: "600000",
    TALLY_CLOSE_LEASE_TTL_MS: "3000",
    // info: the close logs how long its run took ("close run", ms), without the process start.
    TALLY_LOG_LEVEL: "info",
    // Events up to the month's start + the horizon: the generated month is inside it.
    TALLY_BACKFILL_DAYS: "400",
  };
  const servers: Servers = { ch: chServer, nats, env, prefix };
  const nc = await connect({ servers: nats.url });
  cleanup.add("close NATS connection", () => nc.close());
  progress(`applying the catalog: ${a.customers.toLocaleString("en-US")} customers and subscriptions`);
  const catalogS = await applyCatalog(nc, prefix, a.customers);
  progress(`catalog applied in ${catalogS.toFixed(1)} s`);
  const invoicesBucket = busNames(prefix).invoicesBucket;
  const openInvoices = () => InvoiceStore.open(nc.jetstream(), invoicesBucket, 1);

  progress("run A: tally close --once");
  const runA = await closeOnce(servers, cleanup, await openInvoices());
  const invoicesA = await readInvoices(await openInvoices());
  const problemsA = checkExactlyOnce(invoicesA, a.customers);
  progress(`run A: ${runA.finalized} finalized in ${runA.wallS.toFixed(1)} s; problems: ${problemsA.length}`);

  let runB1: CloseRun | null = null;
  let runB2: CloseRun | null = null;
  let problemsB: string[] = [];
  if (!a.skipKill) {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(`KV_${invoicesBucket}`);
    // The lease of run A was released at its exit; a fresh bucket for run B.
    const store = await openInvoices();
    progress(
      `run B: tally close, SIGKILL at ${Math.floor(a.customers / 2).toLocaleString("en-US")} finalized`,
    );
    runB1 = await closeOnce(servers, cleanup, store, Math.floor(a.customers / 2));
    await sleep(3500); // the killed leader's lease (TTL 3 s) expires
    progress("run B: restart");
    runB2 = await closeOnce(servers, cleanup, store);
    const invoicesB = await readInvoices(store);
    problemsB = checkExactlyOnce(invoicesB, a.customers);
    for (const [id, inv] of invoicesB) {
      const before = invoicesA.get(id);
      if (before === undefined || before.total !== inv.total)
        problemsB.push(`${id}: total ${inv.total} after the kill, ${before?.total} in run A`);
      if (problemsB.length > 10) break;
    }
  }

  const totalCents = [...invoicesA.values()].reduce((s, i) => s + i.total, 0);
  const rows: string[][] = [
    [
      "step",
      "process wall s",
      "close run s",
      "close CPU s",
      "ClickHouse CPU s",
      "NATS CPU s",
      "finalized",
      "problems",
    ],
    ["catalog apply (in process)", fmt(catalogS, 1), "", "", "", "", "", ""],
    row("run A: close --once", runA, problemsA),
  ];
  if (runB1 !== null && runB2 !== null) {
    rows.push(row("run B: until SIGKILL", runB1, []));
    rows.push(row("run B: restart to the end", runB2, problemsB));
  }
  process.stdout.write(`\n${table(rows)}\n`);
  process.stdout.write(
    `\nrun A: close run ${runA.closeS?.toFixed(1)} s (process ${runA.wallS.toFixed(1)} s) for ${a.customers.toLocaleString("en-US")} subscriptions ` +
      `(target ${targetS} s); invoiced total ${(totalCents / 100).toLocaleString("en-US")} USD\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      machine: machineBase(),
      events: a.events,
      customers: a.customers,
      dataset,
      catalogApplyS: round(catalogS, 1),
      runA,
      problemsA,
      runB1,
      runB2,
      problemsB,
      totalCents,
    })}\n`,
  );
  if (problemsA.length > 0 || problemsB.length > 0) process.exitCode = 1;
}

function row(label: string, r: CloseRun, problems: string[]): string[] {
  return [
    label,
    fmt(r.wallS, 1),
    r.closeS === null ? "" : fmt(r.closeS, 1),
    fmt(r.closeCpuS, 1),
    fmt(r.clickhouseCpuS, 1),
    fmt(r.natsCpuS, 1),
    r.killed ? "(killed)" : String(r.finalized),
    problems.length === 0 ? "none" : problems.join("; "),
  ];
}
