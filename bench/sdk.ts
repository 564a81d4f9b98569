/**
 * SDK benchmark: how many events per second one Node.js process can push through the `Tally`
 * client into a real edge (acknowledged = answered 202, i.e. durable in JetStream).
 *
 *   npm run bench -- sdk [--seconds 10] [--warmup 2] [--batch 5000] [--concurrency 4] [--sink 1]
 *   node dist/bench/sdk.js [same flags]          (after npm run build)
 *
 * 1. Starts nats-server and clickhouse-server in a temp dir, runs `tally migrate`, then
 *    `tally edge` and `tally sink` as child processes (everything on 127.0.0.1).
 * 2. This process tracks events as fast as it can for `--seconds` (after `--warmup`), yielding
 *    to the event loop every 1,000 events; when the SDK's buffer is full it waits for room
 *    (`trackAsync`), so the rate measured is what the edge acknowledges, not what is buffered.
 * 3. Reports acknowledged events/s in the window, track() cost, requests retried, and checks
 *    that every event tracked is countable in ClickHouse once (uniqExact) after close().
 *    `--sink 0` runs no sink (the edge still acknowledges once JetStream stored the events): the
 *    ingest path alone, without the sink and ClickHouse competing for the same cores.
 * 4. Prints a table, then one JSON line `{"bench":"sdk",...}` last. Every process started is
 *    stopped, also on failure or Ctrl-C.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { setImmediate as yieldLoop, setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { freePort, startClickHouse, startNats, type ServerProcess } from "../src/dev/servers.js";
import { Tally, TallyBufferFullError, type TallyError } from "../src/sdk/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, "../src/cli/main.js");
const target = 200_000;

interface Args {
  seconds: number;
  warmup: number;
  batch: number;
  concurrency: number;
  sink: number;
}

function parseArgs(args: string[]): Args {
  const a: Args = { seconds: 10, warmup: 2, batch: 5000, concurrency: 4, sink: 1 };
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i]?.replace(/^--/, "") as keyof Args | undefined;
    const v = Number(args[i + 1]);
    if (k === undefined || !(k in a) || !Number.isFinite(v) || v < (k === "sink" ? 0 : 1))
      throw new Error(
        `usage: sdk [--seconds N] [--warmup N] [--batch N] [--concurrency N] (got ${args.join(" ")})`,
      );
    a[k] = v;
  }
  return a;
}

function progress(msg: string): void {
  process.stderr.write(`[sdk ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Proc {
  name: string;
  child: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
}

function spawnProc(name: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let tail = "";
  const keep = (d: Buffer) => (tail = (tail + d.toString("utf8")).slice(-4000));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    name,
    child,
    output: () => tail,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function runToEnd(name: string, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const p = spawnProc(name, args, env);
  const code = await new Promise<number | null>((r) => p.child.once("exit", (c) => r(c)));
  if (code !== 0) throw new Error(`${name} exited with ${code}:\n${p.output()}`);
}

async function waitHttp(url: string, p: Proc): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (performance.now() < deadline) {
    if (p.child.exitCode !== null) throw new Error(`${p.name} exited:\n${p.output()}`);
    const ok = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(
      async (r) => (await r.arrayBuffer(), r.ok),
      () => false,
    );
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${p.name} not ready:\n${p.output()}`);
}

/** CPU seconds (user + system) of a process, from /proc (Linux); null elsewhere. */
function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return null;
  }
}

async function chQuery(url: string, query: string): Promise<string> {
  const res = await fetch(`${url}/?query=${encodeURIComponent(query)}`, {
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`ClickHouse: ${text}`);
  return text.trim();
}

/** Entry point called by bench/run.ts with the arguments after the bench name. */
export async function main(args: string[]): Promise<void> {
  const a = parseArgs(args);
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.splice(0).reverse())
      await c().catch((e: unknown) => progress(`cleanup: ${String(e)}`));
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await run(a, (fn) => cleanups.push(fn));
  } finally {
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function run(a: Args, onCleanup: (fn: () => Promise<void>) => void): Promise<void> {
  const tmp = mkdtempSync(join(os.tmpdir(), "tally-bench-sdk-"));
  onCleanup(() => Promise.resolve(rmSync(tmp, { recursive: true, force: true })));
  progress("starting nats-server and clickhouse-server");
  const servers = await Promise.allSettled([startNats({ dataDir: tmp }), startClickHouse({ dataDir: tmp })]);
  for (const s of servers) if (s.status === "fulfilled") onCleanup(() => s.value.stop(10_000));
  for (const s of servers) if (s.status === "rejected") throw s.reason;
  const [nats, ch] = servers.map((s) => (s as PromiseFulfilledResult<ServerProcess>).value) as [
    ServerProcess,
    ServerProcess,
  ];
  const key = `tally_bench_sdk_${randomBytes(12).toString("hex")}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_OPTIONS: "",
    TALLY_NATS_URL: nats.url,
    TALLY_CLICKHOUSE_URL: ch.url,
    TALLY_NATS_PREFIX: "bench",
    TALLY_CLICKHOUSE_DATABASE: "bench",
    TALLY_LOG_LEVEL: "warn",
    TALLY_DEV_KEY: key,
    TALLY_SINK_METRICS_PORT: "0",
  };
  progress("tally migrate");
  await runToEnd("tally migrate", [cli, "migrate"], env);
  const port = await freePort();
  const edge = spawnProc("tally edge", [cli, "edge"], {
    ...env,
    TALLY_HTTP_HOST: "127.0.0.1",
    TALLY_HTTP_PORT: String(port),
    TALLY_DEV_MODE: "true",
  });
  onCleanup(() => edge.stop());
  const sink = a.sink > 0 ? spawnProc("tally sink", [cli, "sink"], env) : null;
  if (sink !== null) onCleanup(() => sink.stop());
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/healthz`, edge);
  progress(`edge on ${url}; tracking for ${a.warmup} s warmup + ${a.seconds} s`);

  const errors: TallyError[] = [];
  const tally = new Tally({
    url,
    apiKey: key,
    maxBatchSize: a.batch,
    maxConcurrentRequests: a.concurrency,
    maxBufferedEvents: Math.max(100_000, a.batch * a.concurrency * 4),
    onError: (e) => errors.push(e),
  });
  onCleanup(() => tally.close());

  const customers = Array.from({ length: 100 }, (_, i) => `cust-${i}`);
  let i = 0;
  let trackNs = 0n;
  let fullWaits = 0;
  const t0 = performance.now();
  const windowStart = t0 + a.warmup * 1000;
  const windowEnd = windowStart + a.seconds * 1000;
  const pids: Record<string, number | undefined> = {
    "sdk (this process)": process.pid,
    edge: edge.child.pid,
    sink: sink?.child.pid,
    "nats-server": nats.process.pid,
    "clickhouse-server": ch.process.pid,
  };
  let cpuAtStart: Record<string, number | null> = {};
  const cpuNow = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  let ackAtStart = -1;
  let ackAtEnd = -1;
  const cores: Record<string, number | null> = {};
  let tEnd = windowEnd;
  let tStart = windowStart;
  while (true) {
    const now = performance.now();
    if (ackAtStart < 0 && now >= windowStart) {
      ackAtStart = tally.stats().acknowledged;
      cpuAtStart = cpuNow();
      tStart = now;
    }
    if (now >= windowEnd) {
      ackAtEnd = tally.stats().acknowledged;
      tEnd = now;
      const cpuAtEnd = cpuNow();
      for (const k of Object.keys(pids)) {
        const a0 = cpuAtStart[k];
        const a1 = cpuAtEnd[k];
        cores[k] =
          a0 == null || a1 == null ? null : Number(((a1 - a0) / ((tEnd - tStart) / 1000)).toFixed(2));
      }
      break;
    }
    const s = process.hrtime.bigint();
    try {
      for (let k = 0; k < 1000; k++, i++) {
        tally.track({
          type: "api_call",
          customer: customers[i % 100]!,
          properties: { tokens: i % 1000, model: "small" },
        });
      }
    } catch (err: unknown) {
      if (!(err instanceof TallyBufferFullError)) throw err;
      fullWaits++;
      trackNs += process.hrtime.bigint() - s;
      await tally.trackAsync({
        type: "api_call",
        customer: customers[i % 100]!,
        properties: { tokens: i % 1000, model: "small" },
      });
      i++;
      continue;
    }
    trackNs += process.hrtime.bigint() - s;
    await yieldLoop();
  }
  const tracked = tally.stats().tracked;
  progress(`closing (flush ${tally.stats().buffered} buffered events)`);
  const c0 = performance.now();
  await tally.close();
  const closeMs = performance.now() - c0;
  const stats = tally.stats();
  const windowS = (tEnd - tStart) / 1000;
  const eventsPerS = Math.round((ackAtEnd - ackAtStart) / windowS);

  progress("waiting until every acknowledged event is countable in ClickHouse");
  let countable = 0;
  const deadline = performance.now() + 120_000;
  while (sink !== null && performance.now() < deadline) {
    countable = Number(await chQuery(ch.url, "SELECT uniqExact(id) FROM bench.events"));
    if (countable >= stats.acknowledged) break;
    await sleep(500);
  }

  const rows: [string, string][] = [
    ["events acknowledged / s (window)", eventsPerS.toLocaleString("en-US")],
    ["target", `>= ${target.toLocaleString("en-US")}`],
    ["window", `${windowS.toFixed(1)} s after ${a.warmup} s warmup`],
    ["events tracked (total)", tracked.toLocaleString("en-US")],
    [
      "track() cost per event",
      `${(Number(trackNs) / i / 1000).toFixed(2)} µs (incl. validation + protobuf encode)`,
    ],
    ["buffer-full waits", String(fullWaits)],
    ["load average (1 min) at end", os.loadavg()[0]!.toFixed(2)],
    ["batch size / concurrency", `${a.batch} / ${a.concurrency}`],
    ["requests retried", String(stats.retries)],
    ["failed events", String(stats.failed)],
    ["close() (final flush)", `${Math.round(closeMs)} ms`],
    [
      "countable in ClickHouse (uniqExact)",
      sink === null
        ? "not checked (--sink 0)"
        : `${countable.toLocaleString("en-US")} of ${stats.acknowledged.toLocaleString("en-US")}`,
    ],
  ];
  for (const [k, v] of Object.entries(cores))
    rows.push([`CPU cores used: ${k}`, v === null ? "n/a" : v.toFixed(2)]);
  const w = Math.max(...rows.map((r) => r[0].length));
  process.stdout.write(`\nSDK bench (${os.cpus().length} cores, Node ${process.version})\n\n`);
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
  process.stdout.write(
    `${JSON.stringify({
      bench: "sdk",
      events_per_s: eventsPerS,
      target_events_per_s: target,
      window_s: Number(windowS.toFixed(2)),
      tracked,
      acknowledged: stats.acknowledged,
      failed: stats.failed,
      retries: stats.retries,
      countable,
      sink: sink !== null,
      batch: a.batch,
      concurrency: a.concurrency,
      cpu_cores: cores,
      loadavg_1m: Number(os.loadavg()[0]!.toFixed(2)),
      track_us_per_event: Number((Number(trackNs) / i / 1000).toFixed(3)),
    })}\n`,
  );
  if (errors.length > 0) throw new Error(`${errors.length} batches failed; first: ${errors[0]!.message}`);
  if (sink !== null && countable !== stats.acknowledged)
    throw new Error(`only ${countable} of ${stats.acknowledged} acknowledged events are countable`);
}

// Also runnable directly: node dist/bench/sdk.js [flags]
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    () => setTimeout(() => process.exit(0), 1000).unref(),
    (err: unknown) => {
      process.stderr.write(
        `bench sdk failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
