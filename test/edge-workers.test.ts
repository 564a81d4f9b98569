import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClickHouse, migrate, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { freePort } from "../src/dev/servers.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { childEnv, eventually, guid, startTestSink, testConfig, usageCount } from "./helpers.js";

const KEY = "tally_workers_test_admin_key_0123456789";

let config: Config;
let ch: ClickHouseClient;
let sink: RunningSink;
let port: number;
let edge: ChildProcess | null = null;

/** Child processes of `pid` (the cluster's workers), from /proc. */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

/** CPU ticks a process used so far. */
function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").slice(-400).split(") ")[1]!.split(" ");
  return Number(f[11]) + Number(f[12]);
}

/** One request on its own connection (no keep-alive), so the cluster deals it to some worker. */
function send(method: string, path: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: false,
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", connection: "close" },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function accepted(metrics: string): number {
  return Number(/^tally_events_accepted_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? "NaN");
}

async function postEvents(customer: string, n: number, prefix: string): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    const events = Array.from({ length: 10 }, (_, j) => ({ id: `${prefix}-${i + j}`, type: "t", customer }));
    const r = await send("POST", "/v1/events", JSON.stringify(events));
    expect(r.status, r.text).toBe(202);
  }
}

beforeAll(async () => {
  config = testConfig();
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  port = await freePort();
  edge = spawn(process.execPath, ["dist/src/cli/main.js", "edge", "--workers", "2"], {
    env: {
      ...childEnv(config),
      TALLY_HTTP_PORT: String(port),
      TALLY_HTTP_HOST: "127.0.0.1",
      TALLY_DEV_MODE: "true",
      TALLY_DEV_KEY: KEY,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const pid = edge.pid!;
  await eventually(
    async () => {
      if (edge!.exitCode !== null) throw new Error(`edge exited with ${edge!.exitCode}`);
      if (children(pid).length < 2) return false;
      return fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
    },
    60_000,
    "two edge workers",
  );
  sink = await startTestSink(config);
}, 90_000);

afterAll(async () => {
  if (edge !== null && edge.exitCode === null) {
    for (const w of children(edge.pid!)) process.kill(w, "SIGKILL");
    edge.kill("SIGKILL");
  }
  await sink?.stop();
  await ch?.close();
});

describe("tally edge --workers 2", () => {
  it("both workers serve one port; /metrics sums them; a killed worker is replaced; SIGTERM stops all", async () => {
    const primary = edge!.pid!;
    const workers = children(primary);
    expect(workers).toHaveLength(2);
    // Let both workers listen (the second is forked after the first listens).
    await new Promise((r) => setTimeout(r, 2000));
    const before = workers.map(cpuTicks);
    const customer = `c-${guid()}`;
    await postEvents(customer, 1000, `w-${guid()}`);
    const used = workers.map((w, i) => cpuTicks(w) - before[i]!);
    // The primary deals connections round robin: each worker did a real share of the work.
    const total = used[0]! + used[1]!;
    for (const u of used) expect(u / total).toBeGreaterThan(0.25);

    // Whichever worker answers /metrics, it reports the sum over both.
    for (let i = 0; i < 6; i++) {
      const m = await send("GET", "/metrics");
      expect(m.status).toBe(200);
      expect(accepted(m.text)).toBe(1000);
    }
    await eventually(
      async () => (await usageCount(ch, config.clickhouse.database, customer)) === 1000,
      30_000,
    );

    // SIGKILL a worker: the primary forks another, the port keeps answering.
    process.kill(workers[0]!, "SIGKILL");
    await eventually(
      () => Promise.resolve(children(primary).filter((w) => !workers.includes(w)).length === 1),
      30_000,
      "a replacement worker",
    );
    await new Promise((r) => setTimeout(r, 2000));
    await postEvents(customer, 100, `w2-${guid()}`);
    await eventually(
      async () => (await usageCount(ch, config.clickhouse.database, customer)) === 1100,
      30_000,
    );

    // SIGTERM to the primary drains every worker and ends with 0.
    const all = children(primary);
    const code = await new Promise<number | null>((resolve) => {
      edge!.once("exit", (c) => resolve(c));
      edge!.kill("SIGTERM");
    });
    expect(code).toBe(0);
    for (const w of all) expect(() => process.kill(w, 0)).toThrow();
  }, 120_000);
});
