import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Starts real nats-server and clickhouse-server processes on loopback for the `dev` role,
 * the test suite and the benchmarks. Each instance owns a data directory; ports are taken
 * from the OS (port 0) so two stacks with different data directories never collide.
 */

/** A free TCP port on 127.0.0.1, as chosen by the OS. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") return reject(new Error("no port"));
      srv.close(() => resolvePort(addr.port));
    });
  });
}

/** A started server process. */
export interface ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly process: ChildProcess;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process exited. */
  stop(graceMs?: number): Promise<void>;
}

function wrap(name: string, url: string, port: number, child: ChildProcess, pidFile: string): ServerProcess {
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    name,
    url,
    port,
    process: child,
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
      rmSync(pidFile, { force: true });
    },
  };
}

/** Kills a process left behind by an earlier run that was itself killed (stale pid file). */
function killStale(pidFile: string): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (Number.isInteger(pid) && pid > 1) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  rmSync(pidFile, { force: true });
}

export interface StartNatsOptions {
  dataDir: string;
  port?: number;
  /** Detach from our process group so Ctrl-C in a terminal does not reach it before we drain. */
  detached?: boolean;
}

/** Starts nats-server with JetStream, storing under `<dataDir>/nats`. */
export async function startNats(opts: StartNatsOptions): Promise<ServerProcess> {
  const dir = resolve(opts.dataDir, "nats");
  mkdirSync(dir, { recursive: true });
  const pidFile = join(dir, "nats.pid");
  killStale(pidFile);
  const port = opts.port ?? (await freePort());
  const conf = join(dir, "nats.conf");
  writeFileSync(
    conf,
    [
      `listen: 127.0.0.1:${port}`,
      `max_payload: 8MB`,
      `jetstream {`,
      `  store_dir: ${JSON.stringify(join(dir, "js"))}`,
      `  max_memory_store: 256MB`,
      `  max_file_store: 64GB`,
      `}`,
      "",
    ].join("\n"),
  );
  const { child, stderr } = spawnServer("nats-server", ["-c", conf], dir, pidFile, opts.detached);
  const url = `nats://127.0.0.1:${port}`;
  await waitFor(`nats-server on ${url}`, child, stderr, async () => {
    const res = await fetchOk(`http://127.0.0.1:${port}`).catch(() => false);
    return res || (await tcpOpen(port));
  });
  return wrap("nats-server", url, port, child, pidFile);
}

/**
 * The ClickHouse user the edge reads as in dev and tests (`TALLY_CLICKHOUSE_READ_USER`): a
 * read-only profile that bounds each query and the user's concurrency, so read load (usage,
 * live streams, portal, event debugger) cannot starve the sink, which writes as `default`.
 */
export const clickHouseReadUser = "tally_read";

/**
 * A second user with the same read profile, for tests that saturate the profile's concurrency
 * cap on purpose: the cap is per user across the whole server, so saturating `tally_read` would
 * starve every other test file's reads that run at the same time.
 */
export const clickHouseProbeUser = "tally_read_probe";

/** Limits of {@link clickHouseReadUser}'s profile (each exists in ClickHouse 18.16). */
export const readProfile = {
  /** Seconds one read may run. */
  maxExecutionTime: 30,
  /** Reads running at once for the user, across every edge (more: error 202, answered 503). */
  maxConcurrentQueries: 8,
  /** Threads one read may use: the sink keeps the other cores. */
  maxThreads: 1,
  /** Bytes one read may hold. */
  maxMemoryUsage: 2_000_000_000,
} as const;

export interface StartClickHouseOptions {
  dataDir: string;
  httpPort?: number;
  detached?: boolean;
}

/** Starts clickhouse-server with its data under `<dataDir>/clickhouse`. */
export async function startClickHouse(opts: StartClickHouseOptions): Promise<ServerProcess> {
  const dir = resolve(opts.dataDir, "clickhouse");
  for (const sub of ["data", "tmp", "log", "user_files", "format_schemas"]) {
    mkdirSync(join(dir, sub), { recursive: true });
  }
  const pidFile = join(dir, "clickhouse.pid");
  killStale(pidFile);
  const httpPort = opts.httpPort ?? (await freePort());
  const tcpPort = await freePort();
  writeFileSync(
    join(dir, "config.xml"),
    `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>${join(dir, "log", "clickhouse-server.log")}</log>
    <errorlog>${join(dir, "log", "clickhouse-server.err.log")}</errorlog>
    <size>50M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${httpPort}</http_port>
  <tcp_port>${tcpPort}</tcp_port>
  <path>${join(dir, "data")}/</path>
  <tmp_path>${join(dir, "tmp")}/</tmp_path>
  <user_files_path>${join(dir, "user_files")}/</user_files_path>
  <format_schema_path>${join(dir, "format_schemas")}/</format_schema_path>
  <users_config>${join(dir, "users.xml")}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <max_concurrent_queries>200</max_concurrent_queries>
  <mark_cache_size>536870912</mark_cache_size>
  <uncompressed_cache_size>1073741824</uncompressed_cache_size>
  <keep_alive_timeout>30</keep_alive_timeout>
  <timezone>UTC</timezone>
</yandex>
`,
  );
  writeFileSync(
    join(dir, "users.xml"),
    `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>8000000000</max_memory_usage>
      <max_query_size>67108864</max_query_size>
    </default>
    <!-- ${clickHouseReadUser}: every read the edge serves. The bounds of deploy/clickhouse/, scaled to a laptop. -->
    <${clickHouseReadUser}>
      <readonly>1</readonly>
      <max_execution_time>${readProfile.maxExecutionTime}</max_execution_time>
      <max_concurrent_queries_for_user>${readProfile.maxConcurrentQueries}</max_concurrent_queries_for_user>
      <max_threads>${readProfile.maxThreads}</max_threads>
      <max_memory_usage>${readProfile.maxMemoryUsage}</max_memory_usage>
      <max_query_size>1048576</max_query_size>
    </${clickHouseReadUser}>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
${[clickHouseReadUser, clickHouseProbeUser]
  .map(
    (user) => `    <${user}>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>${clickHouseReadUser}</profile>
      <quota>default</quota>
    </${user}>`,
  )
  .join("\n")}
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`,
  );
  const { child, stderr } = spawnServer(
    "clickhouse-server",
    ["--config-file", join(dir, "config.xml")],
    dir,
    pidFile,
    opts.detached,
  );
  const url = `http://127.0.0.1:${httpPort}`;
  await waitFor(
    `clickhouse-server on ${url}`,
    child,
    () => {
      const log = join(dir, "log", "clickhouse-server.err.log");
      return stderr() + (existsSync(log) ? readFileSync(log, "utf8").slice(-4000) : "");
    },
    () => fetchOk(`${url}/ping`),
  );
  return wrap("clickhouse-server", url, httpPort, child, pidFile);
}

/** `setpriv` (util-linux, on every Debian) to tie a server's life to ours; absent elsewhere. */
const deathSignal = process.platform === "linux" && existsSync("/usr/bin/setpriv");

/** Spawns a server, records its pid, and keeps the tail of its stderr for error messages. */
function spawnServer(
  bin: string,
  args: string[],
  cwd: string,
  pidFile: string,
  detached = false,
): { child: ChildProcess; stderr: () => string } {
  // The server must end with the process that started it, even one killed with SIGKILL (no exit
  // handler runs then): on Linux, `setpriv --pdeathsig` makes the kernel send it SIGTERM (a clean
  // shutdown) when its parent dies. setpriv execs the server, so the pid stays the server's.
  // Only for detached servers (`tally dev`): they are out of our process group, so nothing else
  // would stop them. Test servers stay in the runner's group and are stopped by its teardown.
  const [file, argv] =
    detached && deathSignal ? ["setpriv", ["--pdeathsig", "TERM", "--", bin, ...args]] : [bin, args];
  const child = spawn(file, argv, { cwd, stdio: ["ignore", "ignore", "pipe"], detached });
  writeFileSync(pidFile, String(child.pid));
  let tail = "";
  child.stderr?.on("data", (d: Buffer) => {
    tail = (tail + d.toString()).slice(-4000);
  });
  return { child, stderr: () => tail };
}

async function fetchOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

async function tcpOpen(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((r) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      r(true);
    });
    s.once("error", () => r(false));
  });
}

async function waitFor(
  what: string,
  child: ChildProcess,
  output: () => string,
  ready: () => Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output()}`,
      );
    }
    if (await ready()) return;
    await sleep(100);
  }
  child.kill("SIGKILL");
  throw new Error(`${what} not ready after ${timeoutMs} ms:\n${output()}`);
}
