/**
 * Ingest benchmark: the whole pipeline on this machine, in one run.
 *
 *   npm run bench -- ingest [--connections 50] [--single 10] [--batch 15] [--batch-size 100]
 *                           [--warmup 3] [--paced 8] [--catchup 90] [--edge-workers 1] [--profile]
 *                           [--no-baseline] [--keep]
 *
 * 1. Starts nats-server and clickhouse-server in a temp data dir, runs `tally migrate`, then the
 *    edge and the sink as separate child processes (`node dist/src/cli/main.js edge|sink`),
 *    configured only by TALLY_* variables. TALLY_* tunables set in the bench's environment
 *    (e.g. TALLY_PUBLISH_MAX_INFLIGHT=8) are passed through to both.
 * 2. Bare-Hono baseline (bench/baseline-server.ts, a child process): the same bodies, JSON.parse
 *    only, 202. Same autocannon settings.
 * 3. Edge: single-event JSON requests, then 100-event JSON arrays. autocannon is closed loop
 *    (each connection sends its next request when the previous one was answered): the numbers
 *    are throughput at saturation and the latency at that throughput. Every event id is new,
 *    every timestamp current (bodies are built per request).
 * 4. End to end, during and after the batch phase: `count()` of the ClickHouse events table
 *    every 500 ms (events countable per second), until every accepted event is countable.
 *    Ingest-to-countable lag: a marker event (own customer) is sent through the edge every
 *    50 ms during the load; ClickHouse is polled for marker ids every 100 ms; lag = first poll
 *    answer containing the id − just before the marker was sent (an upper bound, ±100 ms).
 *    A paced phase then repeats the lag probe at 70% of the measured end-to-end rate, which is
 *    the latency the pipeline adds when it is not overloaded.
 * 5. Edge RSS: VmRSS sampled every 100 ms during load, and VmHWM (kernel's peak) at the end.
 *    CPU per process per phase from /proc (cores used, 1.0 = one core), including what other
 *    processes on the machine used meanwhile.
 * 6. Prints a table and, as the last stdout line, one JSON object. Progress goes to stderr.
 *    Every process started is stopped (also on failure or Ctrl-C); all traffic is on 127.0.0.1.
 *
 * If the sink stops making progress, the ingest numbers are still measured and the end-to-end
 * ones are reported as failed, with what NATS sees of the sink (consumer state, pull requests).
 *
 * --edge-workers N runs the edge as `tally edge --workers N` (N processes on one port, node:cluster);
 * the edge's CPU and memory columns are then the sum over its processes (use --profile with one
 * worker: the profile read is one process's).
 *
 * BENCH_EDGE_NODE_OPTIONS is passed to the edge as NODE_OPTIONS (V8 heap flags and RSS).
 *
 * --profile runs the edge and the sink with `node --cpu-prof` and prints their top self-time
 * functions and areas, over the whole run and over the single-event and the batch phase alone
 * (profiling slows them down: use it to find limits, not for the numbers).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config/index.js";
import { freePort, startClickHouse, startNats, type ServerProcess } from "../src/dev/servers.js";
import { Cleanup, runToEnd, spawnChild, type Child } from "./lib/children.js";
import { monotonicUs, summarizeProfile, type ProfileSummary, type ProfileWindow } from "./lib/cpuprofile.js";
import { diagnoseSink, type SinkDiagnosis } from "./lib/diagnose.js";
import { chQuery, CountSampler, MarkerProbe, waitCountable, type MarkerStats } from "./lib/e2e.js";
import { Bodies, load, stopAllLoad, type LoadResult } from "./lib/load.js";
import { CpuMeter, machineCoresBusy, memoryMiB, processTree, round, RssSampler } from "./lib/proc.js";
import { fmt, machineBase, progressLog, table } from "./lib/report.js";

const progress = progressLog("ingest");

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, "../src/cli/main.js");
const baselineScript = join(here, "baseline-server.js");

/** The targets (2-core machine, everything local, dedup on). */
const targets = {
  batchEventsPerS: 250_000,
  batchP99Ms: 50,
  singleReqPerS: 15_000,
  singleP99Ms: 20,
  e2eEventsPerS: 150_000,
  e2eP99LagMs: 2_000,
  edgeRssMb: 200,
};

/** TALLY_* variables the bench sets itself; all others in the environment are passed through. */
const controlled = new Set([
  "TALLY_NATS_URL",
  "TALLY_CLICKHOUSE_URL",
  "TALLY_NATS_PREFIX",
  "TALLY_CLICKHOUSE_DATABASE",
  "TALLY_HTTP_PORT",
  "TALLY_HTTP_HOST",
  "TALLY_DEV_MODE",
  "TALLY_DEV_KEY",
  "TALLY_LOG_LEVEL",
  "TALLY_SINK_METRICS_PORT",
  "TALLY_SINK_METRICS_HOST",
  "TALLY_DATA_DIR",
]);

interface Args {
  connections: number;
  singleS: number;
  batchS: number;
  batchSize: number;
  warmupS: number;
  pacedS: number;
  catchupS: number;
  maxS: number;
  edgeWorkers: number;
  profile: boolean;
  baseline: boolean;
  keep: boolean;
}

function parseArgs(args: readonly string[]): Args {
  const known = new Set([
    "--connections",
    "--single",
    "--batch",
    "--batch-size",
    "--warmup",
    "--paced",
    "--catchup",
    "--max-seconds",
    "--edge-workers",
    "--profile",
    "--no-baseline",
    "--keep",
  ]);
  for (const a of args) {
    if (a.startsWith("--") && !known.has(a)) {
      throw new Error(`unknown option ${a}; options: ${[...known].join(" ")}`);
    }
  }
  const num = (name: string, fallback: number, min: number) => {
    const i = args.indexOf(`--${name}`);
    if (i === -1) return fallback;
    const n = Number(args[i + 1]);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
    return n;
  };
  return {
    connections: num("connections", 50, 1),
    singleS: num("single", 10, 1),
    batchS: num("batch", 15, 1),
    batchSize: num("batch-size", 100, 2),
    warmupS: num("warmup", 3, 0),
    pacedS: num("paced", 8, 0),
    catchupS: num("catchup", 90, 5),
    maxS: num("max-seconds", 420, 60),
    edgeWorkers: num("edge-workers", 1, 1),
    profile: args.includes("--profile"),
    baseline: !args.includes("--no-baseline"),
    keep: args.includes("--keep"),
  };
}

/** Progress line while waiting for events to become countable. */
const waiting = (expected: number) => (n: number) => progress(`  countable ${n} of ${expected}`);

/** Entry point called by bench/run.ts with the arguments after the bench name. */
export async function main(args: string[]): Promise<void> {
  const a = parseArgs(args);
  const cleanup = new Cleanup();
  const watchdog = setTimeout(() => {
    process.stderr.write(`ingest bench exceeded ${a.maxS} s; stopping everything\n`);
    stopAllLoad();
    void cleanup.run().finally(() => process.exit(1));
  }, a.maxS * 1000);
  watchdog.unref();
  try {
    await run(a, cleanup);
  } finally {
    stopAllLoad();
    await cleanup.run();
    clearTimeout(watchdog);
  }
}

interface Stack {
  nats: ServerProcess;
  ch: ServerProcess;
  edge: Child;
  sink: Child;
  edgeUrl: string;
  sinkMetricsUrl: string;
  env: NodeJS.ProcessEnv;
  profileDir: string | null;
}

interface Paced {
  rateEventsPerS: number;
  result: LoadResult;
  markers: MarkerStats;
}

async function run(a: Args, cleanup: Cleanup): Promise<void> {
  const startedAt = new Date();
  const t0 = performance.now();
  const tmp = mkdtempSync(join(os.tmpdir(), "tally-bench-"));
  if (a.keep) progress(`data dir kept: ${tmp}`);
  else cleanup.add("remove temp dir", () => Promise.resolve(rmSync(tmp, { recursive: true, force: true })));

  // Other users' work on the machine skews every number: measure it before starting.
  const busyBefore = await machineCoresBusy(2000);
  if (busyBefore > 0.2) {
    progress(`WARNING: the machine is already busy (${busyBefore} cores used by other processes)`);
  }

  const runId = randomBytes(4).toString("hex");
  const key = `tally_bench_admin_${randomBytes(12).toString("hex")}`;
  const stack = await startStack(a, tmp, key, cleanup);
  const machine = await machineInfo(stack.ch.url);
  const config = loadConfig(stack.env);
  // Whatever the config holds for the hot path (publisher and sink), as the children parse it.
  const { metricsPort: _port, metricsHost: _host, ...sinkSettings } = config.sink;
  const settings = {
    partitions: config.nats.partitions,
    publish: config.publish,
    sink: sinkSettings,
    passed_through: Object.keys(process.env)
      .filter((k) => k.startsWith("TALLY_") && !controlled.has(k))
      .map((k) => `${k}=${process.env[k]}`),
  };
  progress(`settings: ${JSON.stringify(settings)}`);

  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const table = "bench.events";
  const sampler = new CountSampler(stack.ch.url, table);
  let baseline: Child | undefined;
  const cpu = new CpuMeter(() => ({
    edge: stack.edge.pid,
    sink: stack.sink.pid,
    "nats-server": stack.nats.process.pid,
    "clickhouse-server": stack.ch.process.pid,
    baseline: baseline?.pid,
  }));
  const cpuByPhase: Record<string, Record<string, number>> = {};
  const loadOpts = (label: string, url: string, size: number, durationS: number, bodies: Bodies) => ({
    label,
    url,
    headers,
    connections: a.connections,
    durationS,
    eventsPerRequest: size,
    bodies,
  });

  // --- Baseline: bare Hono, same bodies, same autocannon settings --------------------------------
  let baseSingle: LoadResult | null = null;
  let baseBatch: LoadResult | null = null;
  if (a.baseline) {
    let port = 0;
    let listening!: () => void;
    const isListening = new Promise<void>((resolve) => (listening = resolve));
    const b = spawnChild("baseline-server", process.execPath, [baselineScript], {
      env: { ...process.env, NODE_OPTIONS: "" },
      onLine: (line) => {
        const m = /"listening":(\d+)/.exec(line);
        if (m) {
          port = Number(m[1]);
          listening();
        }
      },
    });
    baseline = b;
    cleanup.add("stop baseline server", () => b.stop(5000));
    await within(isListening, 15_000, "baseline server did not start", b);
    const url = `http://127.0.0.1:${port}`;
    const bodies = new Bodies(`${runId}-base`);
    if (a.warmupS > 0) {
      progress("baseline warm-up");
      await load(loadOpts("warm-up", url, 1, a.warmupS, bodies));
      await load(loadOpts("warm-up", url, a.batchSize, a.warmupS, bodies));
    }
    progress(`baseline single events, ${a.connections} connections, ${a.singleS} s`);
    cpu.begin();
    baseSingle = await load(loadOpts("baseline single", url, 1, a.singleS, bodies));
    cpuByPhase["baseline single"] = cpu.end();
    progress(`baseline ${a.batchSize}-event batches, ${a.batchS} s`);
    cpu.begin();
    baseBatch = await load(loadOpts("baseline batch", url, a.batchSize, a.batchS, bodies));
    cpuByPhase["baseline batch"] = cpu.end();
    await b.stop(5000);
    baseline = undefined;
  }

  // --- Edge warm-up: JIT, connections, and a check that the whole pipeline works ------------------
  const bodies = new Bodies(`${runId}-edge`);
  if (a.warmupS > 0) {
    progress("edge warm-up (single + batch)");
    for (const size of [1, a.batchSize]) {
      const r = await load(loadOpts("warm-up", stack.edgeUrl, size, a.warmupS, bodies));
      if (r.ok === 0) throw new Error(`edge warm-up: no request accepted (${JSON.stringify(r.statusCodes)})`);
    }
  } else {
    const res = await fetch(`${stack.edgeUrl}/v1/events`, { method: "POST", headers, body: bodies.next(1) });
    if (res.status !== 202) throw new Error(`edge answered ${res.status}: ${await res.text()}`);
  }
  let accepted = await edgeAccepted(stack);
  progress(`waiting until the ${accepted} warm-up events are countable`);
  // When the pipeline gets stuck, the ingest numbers are still measured (the stream holds what
  // the sink does not take) and the end-to-end ones are reported as missing, loudly.
  let stuck: string | null = null;
  const stallMs = () => (stuck === null ? 20_000 : 5_000);
  const warm = await waitCountable(sampler, accepted, a.catchupS * 1000, waiting(accepted), stallMs());
  if (warm.at === null) {
    stuck = "warm-up";
    progress(
      `WARNING: warm-up events not countable (${warm.countable} of ${accepted}` +
        `${warm.stalled ? ", count stopped moving: the sink is stuck" : ""}); measuring ingest anyway` +
        (stack.sink.output() ? `\nsink output:\n${stack.sink.output()}` : ""),
    );
  }
  const rssIdle = memoryMiB(stack.edge.pid)?.rss ?? NaN;

  // --- Edge: single events -----------------------------------------------------------------------
  progress(`edge single events, ${a.connections} connections, ${a.singleS} s`);
  const metricsBeforeSingle = await scrapeAll(stack);
  let rss = new RssSampler(stack.edge.pid).start();
  cpu.begin();
  const singleFromUs = monotonicUs();
  const single = await load(loadOpts("tally single", stack.edgeUrl, 1, a.singleS, bodies));
  const singleWindow: ProfileWindow = { fromUs: singleFromUs, toUs: monotonicUs() };
  cpuByPhase["tally single"] = cpu.end();
  const rssSingle = rss.stop();
  const pipelineSingle = pipelineStats(metricsBeforeSingle, await scrapeAll(stack));
  accepted = await edgeAccepted(stack);
  const singleLoadEnd = performance.now();
  const singleCaught = await waitCountable(
    sampler,
    accepted,
    a.catchupS * 1000,
    waiting(accepted),
    stallMs(),
  );
  const singleCatchupS = singleCaught.at === null ? null : (singleCaught.at - singleLoadEnd) / 1000;
  if (singleCaught.at === null) {
    stuck ??= "single";
    progress(`WARNING: single-phase events not all countable (${singleCaught.countable} of ${accepted})`);
  }

  // --- Edge: batches, with the end-to-end probes ---------------------------------------------------
  progress(`edge ${a.batchSize}-event batches, ${a.connections} connections, ${a.batchS} s (+ markers)`);
  const metricsBefore = await scrapeAll(stack);
  const chBefore = await chEvents(stack.ch.url);
  sampler.start();
  await sleep(600); // a first count sample before the load starts
  const batchStart = performance.now();
  const c0 = sampler.at(batchStart)?.n ?? accepted;
  const markers = new MarkerProbe({
    edgeUrl: stack.edgeUrl,
    key,
    chUrl: stack.ch.url,
    table,
    customer: "bench-marker-batch",
    idPrefix: `${runId}-mb`,
  });
  markers.start(50, 100);
  rss = new RssSampler(stack.edge.pid).start();
  cpu.begin();
  const batchFromUs = monotonicUs();
  const batch = await load(loadOpts("tally batch", stack.edgeUrl, a.batchSize, a.batchS, bodies));
  const batchWindow: ProfileWindow = { fromUs: batchFromUs, toUs: monotonicUs() };
  cpuByPhase["tally batch (+sink)"] = cpu.end();
  const rssBatch = rss.stop();
  const edgeMemory = await edgeMemoryMiB(stack);
  const batchEnd = performance.now();
  await markers.stopSending();
  accepted = await edgeAccepted(stack);
  const markersDone = markers.finish(a.catchupS * 1000);
  progress(`waiting until all ${accepted} accepted events are countable`);
  cpu.begin();
  const catchUp = await waitCountable(sampler, accepted, a.catchupS * 1000, waiting(accepted), stallMs());
  const caught = catchUp.at;
  cpuByPhase["drain after batch"] = cpu.end();
  if (caught === null) {
    stuck ??= "batch";
    markers.giveUp();
  }
  await markersDone;
  await sampler.stop();
  const metricsAfter = await scrapeAll(stack);
  const chAfter = await chEvents(stack.ch.url);
  const chParts = await chQuery(
    stack.ch.url,
    "SELECT table, count() FROM system.parts WHERE database = 'bench' AND active GROUP BY table ORDER BY table",
  );
  const atEnd = sampler.at(batchEnd);
  const batchMarkers = markers.stats();
  const e2e = {
    eventsPerS: caught === null ? null : (accepted - c0) / ((caught - batchStart) / 1000),
    duringLoadPerS: atEnd ? ((atEnd.n - c0) * 1000) / (atEnd.t - batchStart) : NaN,
    peak1sPerS: sampler.peakRate(1000),
    catchupS: caught === null ? null : (caught - batchEnd) / 1000,
    backlogAtLoadEnd: atEnd ? accepted - atEnd.n : NaN,
    stalled: catchUp.stalled,
    timeline: timeline(sampler, batchStart),
  };
  if (caught === null) {
    progress(
      `WARNING: only ${catchUp.countable} of ${accepted} accepted events countable` +
        (catchUp.stalled ? "; the count stopped moving (pipeline stuck)" : ` after ${a.catchupS} s`),
    );
  }
  let diagnosis: SinkDiagnosis | null = null;
  if (stuck !== null) {
    diagnosis = await diagnoseSink(stack.nats.url, "bench", config.nats.partitions).catch((err: unknown) => {
      progress(`sink diagnosis failed: ${String(err)}`);
      return null;
    });
  }

  // --- Paced: the lag the pipeline adds when it is not saturated ---------------------------------
  let paced: Paced | null = null;
  if (a.pacedS > 0 && stuck === null && caught !== null && e2e.eventsPerS !== null) {
    const rateEventsPerS = Math.round(0.7 * Math.min(e2e.eventsPerS, batch.eventsPerS));
    const reqPerS = Math.max(1, Math.round(rateEventsPerS / a.batchSize));
    progress(`paced batches at ${reqPerS * a.batchSize} events/s for ${a.pacedS} s (lag probe)`);
    const pm = new MarkerProbe({
      edgeUrl: stack.edgeUrl,
      key,
      chUrl: stack.ch.url,
      table,
      customer: "bench-marker-paced",
      idPrefix: `${runId}-mp`,
    });
    pm.start(50, 100);
    cpu.begin();
    const result = await load({
      ...loadOpts("tally paced", stack.edgeUrl, a.batchSize, a.pacedS, bodies),
      overallRate: reqPerS,
    });
    cpuByPhase["paced batch (+sink)"] = cpu.end();
    await pm.finish(a.catchupS * 1000);
    accepted = await edgeAccepted(stack);
    paced = { rateEventsPerS: reqPerS * a.batchSize, result, markers: pm.stats() };
  }

  // --- Exactly once: every accepted event counted, none twice -----------------------------------
  if (stuck === null) await waitCountable(sampler, accepted, 30_000);
  const [rows, unique] = (await chQuery(stack.ch.url, `SELECT count(), uniqExact(id) FROM ${table}`))
    .trim()
    .split("\t")
    .map(Number) as [number, number];
  const edgeHwm = memoryMiB(stack.edge.pid)?.hwm ?? NaN;
  const edgeRss = Math.max(rssSingle, rssBatch, Number.isNaN(edgeHwm) ? 0 : edgeHwm);

  // --- Stop edge and sink now (their profiles are written on exit) -------------------------------
  progress("stopping edge and sink");
  await Promise.all([stack.edge.stop(20_000), stack.sink.stop(20_000)]);
  const profiles = stack.profileDir
    ? readProfiles(stack, { "single phase": singleWindow, "batch phase": batchWindow })
    : null;

  const report = {
    bench: "ingest",
    date: startedAt.toISOString(),
    batch_events_per_s: Math.round(batch.eventsPerS),
    batch_req_per_s: Math.round(batch.reqPerS),
    batch_p50_ms: batch.p50Ms,
    batch_p99_ms: batch.p99Ms,
    batch_non2xx: batch.non2xx,
    single_req_per_s: Math.round(single.reqPerS),
    single_p50_ms: single.p50Ms,
    single_p99_ms: single.p99Ms,
    single_non2xx: single.non2xx,
    request_errors: single.errors + batch.errors,
    request_timeouts: single.timeouts + batch.timeouts,
    e2e_events_per_s: e2e.eventsPerS === null ? null : Math.round(e2e.eventsPerS),
    e2e_during_load_events_per_s: Math.round(e2e.duringLoadPerS),
    e2e_peak_1s_events_per_s: Math.round(e2e.peak1sPerS),
    e2e_catchup_s: e2e.catchupS === null ? null : round(e2e.catchupS, 1),
    e2e_backlog_at_load_end: e2e.backlogAtLoadEnd,
    e2e_stalled: e2e.stalled,
    e2e_stuck_since: stuck,
    sink_diagnosis: diagnosis,
    e2e_p50_lag_ms: batchMarkers.p50Ms,
    e2e_p99_lag_ms: batchMarkers.p99Ms,
    e2e_max_lag_ms: batchMarkers.maxMs,
    e2e_markers: batchMarkers.found,
    e2e_paced_events_per_s: paced?.rateEventsPerS ?? null,
    e2e_paced_p50_lag_ms: paced?.markers.p50Ms ?? null,
    e2e_paced_p99_lag_ms: paced?.markers.p99Ms ?? null,
    single_after_load_catchup_s: singleCatchupS === null ? null : round(singleCatchupS, 1),
    baseline_batch_events_per_s: baseBatch ? Math.round(baseBatch.eventsPerS) : null,
    baseline_batch_p99_ms: baseBatch?.p99Ms ?? null,
    baseline_single_req_per_s: baseSingle ? Math.round(baseSingle.reqPerS) : null,
    baseline_single_p99_ms: baseSingle?.p99Ms ?? null,
    batch_vs_baseline: baseBatch ? round(batch.eventsPerS / baseBatch.eventsPerS, 2) : null,
    single_vs_baseline: baseSingle ? round(single.reqPerS / baseSingle.reqPerS, 2) : null,
    edge_rss_mb: round(edgeRss, 1),
    edge_rss_idle_mb: round(rssIdle, 1),
    edge_rss_peak_single_mb: round(rssSingle, 1),
    edge_rss_peak_batch_mb: round(rssBatch, 1),
    edge_memory_at_batch_end_mb: edgeMemory,
    edge_node_options: process.env.BENCH_EDGE_NODE_OPTIONS ?? "",
    edge_workers: a.edgeWorkers,
    accepted_events: accepted,
    clickhouse_rows: rows,
    clickhouse_unique_ids: unique,
    exactly_once_ok: rows === accepted && unique === accepted,
    connections: a.connections,
    single_s: a.singleS,
    batch_s: a.batchS,
    batch_size: a.batchSize,
    profiled: a.profile,
    settings,
    pipeline_single: pipelineSingle,
    pipeline: pipelineStats(metricsBefore, metricsAfter),
    clickhouse_work: {
      ...diffEvents(chBefore, chAfter),
      active_parts: Object.fromEntries(
        chParts
          .trim()
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => l.split("\t"))
          .map(([t, n]) => [t, Number(n)]),
      ),
    },
    cpu_cores_used: cpuByPhase,
    e2e_timeline: e2e.timeline,
    wall_s: round((performance.now() - t0) / 1000, 1),
    machine_busy_before_cores: busyBefore,
    machine,
  };

  printReport(report, { baseSingle, baseBatch, single, batch, paced, batchMarkers }, profiles);
  console.log(JSON.stringify(report));
}

// --- Stack --------------------------------------------------------------------------------------

async function startStack(a: Args, tmp: string, key: string, cleanup: Cleanup): Promise<Stack> {
  progress("starting nats-server and clickhouse-server");
  const started = await Promise.allSettled([startNats({ dataDir: tmp }), startClickHouse({ dataDir: tmp })]);
  for (const s of started) {
    if (s.status === "fulfilled") cleanup.add(`stop ${s.value.name}`, () => s.value.stop(10_000));
  }
  for (const s of started) if (s.status === "rejected") throw s.reason;
  const [nats, ch] = started.map((s) => (s as PromiseFulfilledResult<ServerProcess>).value) as [
    ServerProcess,
    ServerProcess,
  ];

  const passThrough: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("TALLY_") && !controlled.has(k) && v !== undefined) passThrough[k] = v;
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_OPTIONS: "",
    ...passThrough,
    TALLY_NATS_URL: nats.url,
    TALLY_CLICKHOUSE_URL: ch.url,
    TALLY_NATS_PREFIX: "bench",
    TALLY_CLICKHOUSE_DATABASE: "bench",
    TALLY_LOG_LEVEL: "warn",
    TALLY_DATA_DIR: join(tmp, "tally"),
    TALLY_DEV_KEY: key,
    TALLY_SINK_METRICS_PORT: "0",
  };
  progress("tally migrate");
  await runToEnd("tally migrate", process.execPath, [cli, "migrate"], env, 60_000);

  const profileDir = a.profile ? join(tmp, "profiles") : null;
  // Node 20 refuses --cpu-prof in NODE_OPTIONS, so it goes on the command line.
  const nodeArgs = (role: string) => {
    if (profileDir === null) return [];
    mkdirSync(join(profileDir, role), { recursive: true });
    return ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, role)}`];
  };

  const httpPort = await freePort();
  // No --workers flag for one worker: the bench then also drives builds from before the flag.
  const workersArg = a.edgeWorkers > 1 ? ["--workers", String(a.edgeWorkers)] : [];
  const edgeArgs = [...nodeArgs("edge"), cli, "edge", ...workersArg];
  const edge = spawnChild("tally edge", process.execPath, edgeArgs, {
    env: {
      ...env,
      TALLY_HTTP_HOST: "127.0.0.1",
      TALLY_HTTP_PORT: String(httpPort),
      TALLY_DEV_MODE: "true",
      // e.g. BENCH_EDGE_NODE_OPTIONS="--max-semi-space-size=4" to see what V8 heap sizing does to RSS
      NODE_OPTIONS: process.env.BENCH_EDGE_NODE_OPTIONS ?? "",
    },
  });
  cleanup.add("stop edge", () => edge.stop(15_000));
  // The sink's /metrics (batch sizes, flush times) on a free port: evidence for the report.
  const metricsPort = await freePort();
  const sink = spawnChild("tally sink", process.execPath, [...nodeArgs("sink"), cli, "sink"], {
    env: { ...env, TALLY_SINK_METRICS_PORT: String(metricsPort) },
  });
  cleanup.add("stop sink", () => sink.stop(15_000));

  const edgeUrl = `http://127.0.0.1:${httpPort}`;
  const sinkMetricsUrl = `http://127.0.0.1:${metricsPort}`;
  progress("waiting for edge and sink");
  await Promise.all([
    waitHttp(`${edgeUrl}/healthz`, edge, 30_000),
    waitHttp(`${sinkMetricsUrl}/healthz`, sink, 30_000),
  ]);
  // /healthz answers once the first worker listens; the others are forked after it. Wait for
  // every worker process, then for it to start (the edge logs at warn: no "listening" line),
  // so the measured phases' connections are spread over all of them.
  if (a.edgeWorkers > 1) {
    for (let t = 0; processTree(edge.pid).length < a.edgeWorkers + 1; t++) {
      if (t > 300 || !edge.running()) throw new Error(`edge workers did not start:\n${edge.output()}`);
      await sleep(100);
    }
    await sleep(3000);
  }
  return { nats, ch, edge, sink, edgeUrl, sinkMetricsUrl, env, profileDir };
}

async function waitHttp(url: string, child: Child, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (!child.running()) throw new Error(`${child.name} exited before it was ready:\n${child.output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${child.name} not ready after ${timeoutMs} ms:\n${child.output()}`);
}

async function within(p: Promise<void>, ms: number, what: string, child: Child): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms:\n${child.output()}`)), ms);
  });
  try {
    await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function machineInfo(chUrl: string) {
  let nats = "unknown";
  try {
    nats = execFileSync("nats-server", ["--version"], { encoding: "utf8" })
      .trim()
      .replace(/^nats-server:\s*/, "");
  } catch {
    // reported as unknown
  }
  const clickhouse = (await chQuery(chUrl, "SELECT version()")).trim();
  const require = createRequire(import.meta.url);
  const acPkg = JSON.parse(
    readFileSync(join(dirname(require.resolve("autocannon")), "package.json"), "utf8"),
  ) as { version: string };
  return {
    ...machineBase(),
    nats_server: nats,
    clickhouse_server: clickhouse,
    autocannon: acPkg.version,
  };
}

// --- Metrics from the edge's and the sink's /metrics, and ClickHouse's counters ------------------

type Metrics = Map<string, number>;

/** Prometheus text → sum of every series per metric name (labels dropped). */
function parseProm(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    if (m[1]!.endsWith("_bucket")) continue;
    out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[2]));
  }
  return out;
}

/** Edge + sink metrics, summed by name (both processes register every metric). */
async function scrapeAll(stack: Stack): Promise<Metrics> {
  const out: Metrics = new Map();
  for (const url of [`${stack.edgeUrl}/metrics`, `${stack.sinkMetricsUrl}/metrics`]) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      for (const [k, v] of parseProm(await res.text())) out.set(k, (out.get(k) ?? 0) + v);
    } catch {
      // a missing scrape only leaves the pipeline stats empty
    }
  }
  return out;
}

/**
 * Events the edge answered 202 for, from its own counter: exact, unlike autocannon's count,
 * which misses the requests in flight when a phase ends (the edge still accepts them).
 * Read until two reads 200 ms apart agree.
 */
async function edgeAccepted(stack: Stack): Promise<number> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${stack.edgeUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    const n = parseProm(await res.text()).get("tally_events_accepted_total") ?? 0;
    if (n === last) return n;
    last = n;
    await sleep(200);
  }
  return last;
}

/** What the edge's resident memory is made of, from its own default metrics (prom-client). */
async function edgeMemoryMiB(stack: Stack): Promise<Record<string, number>> {
  try {
    const res = await fetch(`${stack.edgeUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    const m = parseProm(await res.text());
    const mib = (k: string) => round((m.get(k) ?? NaN) / 1024 ** 2, 1);
    return {
      rss: mib("process_resident_memory_bytes"),
      heap_total: mib("nodejs_heap_size_total_bytes"),
      heap_used: mib("nodejs_heap_size_used_bytes"),
      external: mib("nodejs_external_memory_bytes"),
    };
  } catch {
    return {};
  }
}

/** Group-commit and sink-flush shape over the batch phase (and its drain). */
function pipelineStats(before: Metrics, after: Metrics) {
  const d = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  const avg = (name: string, scale = 1) => {
    const n = d(`${name}_count`);
    return n > 0 ? round((d(`${name}_sum`) / n) * scale, 1) : null;
  };
  return {
    publishes: d("tally_publish_seconds_count"),
    requests_per_publish: avg("tally_publish_batch_requests"),
    bytes_per_publish: avg("tally_publish_batch_bytes"),
    publish_ack_ms_avg: avg("tally_publish_seconds", 1000),
    publish_backpressure_waits: d("tally_publish_backpressure_waits_total"),
    publish_failures: d("tally_publish_failures_total"),
    sink_flushes: d("tally_sink_flush_seconds_count"),
    sink_rows_per_flush: avg("tally_sink_batch_rows"),
    sink_flush_ms_avg: avg("tally_sink_flush_seconds", 1000),
    sink_inflight_waits: d("tally_sink_inflight_waits_total"),
    sink_retries: d("tally_sink_insert_retries_total"),
    sink_duplicates: d("tally_sink_duplicates_total"),
    sink_inserted: d("tally_sink_events_inserted_total"),
  };
}

/** ClickHouse's own counters (system.events) that show what the sink asks of it. */
const chCounters = [
  "Query",
  "SelectQuery",
  "InsertQuery",
  "InsertedRows",
  "InsertedBytes",
  "SelectedRows",
  "SelectedBytes",
  "Merge",
  "MergedRows",
  "MergedUncompressedBytes",
];

async function chEvents(url: string): Promise<Metrics> {
  const out: Metrics = new Map();
  try {
    for (const line of (await chQuery(url, "SELECT event, value FROM system.events")).split("\n")) {
      const [k, v] = line.split("\t");
      if (k !== undefined && v !== undefined && chCounters.includes(k)) out.set(k, Number(v));
    }
  } catch {
    // only the report's ClickHouse section stays empty
  }
  return out;
}

function diffEvents(before: Metrics, after: Metrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of chCounters) {
    if (after.has(k)) out[k] = (after.get(k) ?? 0) - (before.get(k) ?? 0);
  }
  return out;
}

// --- Profiles -----------------------------------------------------------------------------------

/**
 * The whole run's profile of the edge and the sink, then each one's profile of every phase in
 * `phases` (keyed `edge, single phase`...): the phases load the edge differently.
 */
function readProfiles(
  stack: Stack,
  phases: Record<string, ProfileWindow>,
): Record<string, ProfileSummary & { file: string }> {
  const out: Record<string, ProfileSummary & { file: string }> = {};
  const keepDir = join(os.tmpdir(), `tally-bench-profiles-${Date.now()}`);
  for (const role of ["edge", "sink"]) {
    const dir = join(stack.profileDir!, role);
    const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")) : [];
    if (files.length === 0) {
      progress(`no CPU profile written by the ${role} (did it exit cleanly?)`);
      continue;
    }
    mkdirSync(join(keepDir, role), { recursive: true });
    const file = join(keepDir, role, files[0]!);
    cpSync(join(dir, files[0]!), file);
    out[role] = { ...summarizeProfile(file, 20), file };
    for (const [phase, w] of Object.entries(phases)) {
      out[`${role}, ${phase}`] = { ...summarizeProfile(file, 20, w), file };
    }
  }
  return out;
}

// --- Output -------------------------------------------------------------------------------------

/** Countable events per second, in one-second steps from the start of the batch phase. */
function timeline(sampler: CountSampler, start: number): [number, number][] {
  const out: [number, number][] = [];
  let prev = sampler.at(start);
  for (let s = 1; prev !== undefined; s++) {
    const cur = sampler.at(start + s * 1000);
    if (cur === undefined || cur.t <= prev.t || cur === sampler.samples[sampler.samples.length - 1]) break;
    out.push([s, Math.round(((cur.n - prev.n) * 1000) / (cur.t - prev.t))]);
    prev = cur;
  }
  return out;
}

type Report = Record<string, unknown> & {
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  pipeline: Record<string, unknown>;
  clickhouse_work: Record<string, unknown>;
  cpu_cores_used: Record<string, Record<string, number>>;
};

function printReport(
  r: Report,
  p: {
    baseSingle: LoadResult | null;
    baseBatch: LoadResult | null;
    single: LoadResult;
    batch: LoadResult;
    paced: Paced | null;
    batchMarkers: MarkerStats;
  },
  profiles: Record<string, ProfileSummary & { file: string }> | null,
): void {
  const m = r.machine;
  console.log(
    `\ningest bench (git ${String(m.git)}) — ${String(m.cores)} cores (${String(m.cpu_model)}), ` +
      `${String(m.memory_gib)} GiB, node ${String(m.node)}, nats-server ${String(m.nats_server)}, ` +
      `clickhouse ${String(m.clickhouse_server)}, autocannon ${String(m.autocannon)}`,
  );
  console.log(`settings: ${JSON.stringify(r.settings)}, edge workers: ${String(r.edge_workers)}`);
  console.log("");
  const loadRows = [
    [
      "phase",
      "conns",
      "secs",
      "req/s",
      "events/s",
      "p50 ms",
      "p90 ms",
      "p99 ms",
      "max ms",
      "non-2xx",
      "errors",
    ],
  ];
  for (const l of [p.baseSingle, p.baseBatch, p.single, p.batch, p.paced?.result ?? null]) {
    if (l === null) continue;
    loadRows.push([
      l.label,
      String(l.connections),
      fmt(l.durationS, 1),
      fmt(l.reqPerS),
      fmt(l.eventsPerS),
      fmt(l.p50Ms),
      fmt(l.p90Ms),
      fmt(l.p99Ms),
      fmt(l.maxMs),
      String(l.non2xx),
      String(l.errors + l.timeouts),
    ]);
  }
  console.log(table(loadRows));
  for (const l of [p.single, p.batch, p.paced?.result]) {
    if (l && (l.non2xx > 0 || l.errors > 0 || l.timeouts > 0)) {
      console.log(
        `\n!!! ${l.label}: ${l.non2xx} non-2xx responses, ${l.errors} errors, ${l.timeouts} timeouts — ` +
          `status codes ${JSON.stringify(l.statusCodes)} !!!`,
      );
    }
  }

  if (r.e2e_stuck_since !== null) {
    const d = r.sink_diagnosis as SinkDiagnosis | null;
    console.log(
      `\n!!! END TO END FAILED: the sink stopped making progress (first seen in the ${r.e2e_stuck_since as string} phase); ` +
        `${fmt(r.clickhouse_rows as number)} of ${fmt(r.accepted_events as number)} accepted events are countable !!!`,
    );
    if (d) {
      console.log(`    consumers: ${JSON.stringify(d.consumers)}`);
      console.log(
        `    sink pull requests/s while stuck: ${fmt(d.pullRequestsPerS)}; e.g. ${d.samplePulls[0] ?? "-"}`,
      );
      console.log(`    server replies to them: ${d.sampleReplies.join("; ") || "-"}`);
    }
  }
  const mk = p.batchMarkers;
  const pm = p.paced?.markers;
  console.log("\nend to end (ClickHouse count() every 500 ms; markers every 50 ms, polled every 100 ms)");
  console.log(
    table([
      ["measure", "value"],
      ["countable events/s, batch start → all countable", fmt(r.e2e_events_per_s as number | null)],
      ["countable events/s during the load only", fmt(r.e2e_during_load_events_per_s as number)],
      ["countable events/s, best 1 s window", fmt(r.e2e_peak_1s_events_per_s as number)],
      ["backlog at load end (events)", fmt(r.e2e_backlog_at_load_end as number)],
      ["catch-up after load end (s)", fmt(r.e2e_catchup_s as number | null, 1)],
      [
        `marker lag under load p50 / p99 / max ms (n=${mk.found}/${mk.accepted})`,
        `${fmt(mk.p50Ms)} / ${fmt(mk.p99Ms)} / ${fmt(mk.maxMs)}`,
      ],
      [
        `marker lag paced at ${fmt(p.paced?.rateEventsPerS)} ev/s p50 / p99 / max ms (n=${pm?.found ?? 0})`,
        pm ? `${fmt(pm.p50Ms)} / ${fmt(pm.p99Ms)} / ${fmt(pm.maxMs)}` : "-",
      ],
      [
        "accepted = rows = unique ids (exactly once)",
        `${fmt(r.accepted_events as number)} / ${fmt(r.clickhouse_rows as number)} / ` +
          `${fmt(r.clickhouse_unique_ids as number)} ${r.exactly_once_ok ? "ok" : "MISMATCH"}`,
      ],
    ]),
  );

  const pass = (ok: boolean | null) => (ok === null ? "n/a" : ok ? "yes" : "NO");
  const num = (k: string) => r[k] as number | null;
  const ge = (k: string, t: number) => (num(k) === null ? null : num(k)! >= t);
  const le = (k: string, t: number) => (num(k) === null ? null : num(k)! <= t);
  console.log("\nvs targets");
  console.log(
    table([
      ["metric", "target", "measured", "met", "bare Hono", "edge/bare"],
      [
        "100-event batches, events/s",
        `>= ${fmt(targets.batchEventsPerS)}`,
        fmt(num("batch_events_per_s")),
        pass(ge("batch_events_per_s", targets.batchEventsPerS)),
        fmt(num("baseline_batch_events_per_s")),
        fmt(num("batch_vs_baseline"), 2),
      ],
      [
        "100-event batches, p99 ms",
        `<= ${targets.batchP99Ms}`,
        fmt(num("batch_p99_ms")),
        pass(le("batch_p99_ms", targets.batchP99Ms)),
        fmt(num("baseline_batch_p99_ms")),
        "",
      ],
      [
        "single events, req/s",
        `>= ${fmt(targets.singleReqPerS)}`,
        fmt(num("single_req_per_s")),
        pass(ge("single_req_per_s", targets.singleReqPerS)),
        fmt(num("baseline_single_req_per_s")),
        fmt(num("single_vs_baseline"), 2),
      ],
      [
        "single events, p99 ms",
        `<= ${targets.singleP99Ms}`,
        fmt(num("single_p99_ms")),
        pass(le("single_p99_ms", targets.singleP99Ms)),
        fmt(num("baseline_single_p99_ms")),
        "",
      ],
      [
        "end to end, countable events/s",
        `>= ${fmt(targets.e2eEventsPerS)}`,
        fmt(num("e2e_events_per_s")),
        pass(ge("e2e_events_per_s", targets.e2eEventsPerS)),
        "",
        "",
      ],
      [
        "ingest-to-countable p99 ms (under load)",
        `<= ${fmt(targets.e2eP99LagMs)}`,
        fmt(num("e2e_p99_lag_ms")),
        pass(le("e2e_p99_lag_ms", targets.e2eP99LagMs)),
        "",
        "",
      ],
      [
        "edge RSS MB (peak)",
        `<= ${targets.edgeRssMb}`,
        fmt(num("edge_rss_mb"), 1),
        pass(le("edge_rss_mb", targets.edgeRssMb)),
        "",
        "",
      ],
    ]),
  );

  console.log(
    `\nCPU, cores used per process (1.00 = one core busy; "other" = processes outside this bench; ` +
      `machine busy before start: ${fmt(r.machine_busy_before_cores as number, 2)} cores)`,
  );
  const procs = [...new Set(Object.values(r.cpu_cores_used).flatMap((c) => Object.keys(c)))];
  console.log(
    table([
      ["phase", ...procs, "total"],
      ...Object.entries(r.cpu_cores_used).map(([phase, c]) => [
        phase,
        ...procs.map((n) => fmt(c[n], 2)),
        fmt(
          Object.values(c).reduce((s, v) => s + v, 0),
          2,
        ),
      ]),
    ]),
  );
  console.log(`\npipeline over the single phase: ${JSON.stringify(r.pipeline_single)}`);
  console.log(`pipeline over the batch phase and its drain: ${JSON.stringify(r.pipeline)}`);
  console.log(
    `clickhouse over the same span (includes the bench's own count/marker polls): ${JSON.stringify(r.clickhouse_work)}`,
  );
  console.log(
    `edge RSS MB: idle ${fmt(r.edge_rss_idle_mb as number, 1)}, peak single ${fmt(r.edge_rss_peak_single_mb as number, 1)}, ` +
      `peak batch ${fmt(r.edge_rss_peak_batch_mb as number, 1)}, VmHWM/peak ${fmt(r.edge_rss_mb as number, 1)}; ` +
      `at batch end ${JSON.stringify(r.edge_memory_at_batch_end_mb)}` +
      (r.edge_node_options ? ` (edge NODE_OPTIONS: ${r.edge_node_options as string})` : ""),
  );

  if (profiles) {
    for (const [role, s] of Object.entries(profiles)) {
      console.log(
        `\nCPU profile of the ${role}: ${fmt(s.busyMs)} ms busy, ${fmt(s.idleMs)} ms idle (${s.file})`,
      );
      console.log(
        table([
          ["self time by area", "ms", "% busy"],
          ...s.areas.slice(0, 12).map((e) => [e.name, fmt(e.ms), fmt(e.pct, 1)]),
        ]),
      );
      console.log(
        table([
          ["top functions (self time)", "ms", "% busy"],
          ...s.functions.map((e) => [e.name.slice(0, 110), fmt(e.ms), fmt(e.pct, 1)]),
        ]),
      );
    }
  }
  console.log("");
}
