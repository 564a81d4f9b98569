import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClickHouse, migrate, queryRows, sql, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { freePort } from "../src/dev/servers.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { Tally, TallyRejectedError, type TallyError } from "../src/sdk/index.js";
import { childEnv, distinctCount, eventually, startTestSink, testConfig } from "./helpers.js";

const KEY = "tally_sdk_test_admin_key_0123456789";

let config: Config;
let ch: ClickHouseClient;
let sink: RunningSink;
let port: number;
let edge: ChildProcess | null = null;

/** `tally edge` as a real child process, so SIGKILL kills a real server mid-request. */
async function spawnEdge(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "edge"], {
    env: {
      ...childEnv(config),
      TALLY_HTTP_PORT: String(port),
      TALLY_HTTP_HOST: "127.0.0.1",
      TALLY_DEV_MODE: "true",
      TALLY_DEV_KEY: KEY,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`edge exited with ${child.exitCode}`);
      return fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
    },
    30_000,
    "edge listening",
  );
  return child;
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

beforeAll(async () => {
  config = testConfig();
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  port = await freePort();
  edge = await spawnEdge(); // creates the streams
  sink = await startTestSink(config);
});

afterAll(async () => {
  edge?.kill("SIGKILL");
  await sink?.stop();
  await ch?.close();
});

async function sumOf(customer: string, property: string): Promise<string> {
  const rows = await queryRows<{ sum: string }>(
    ch,
    sql.sumProperty(config.clickhouse.database, { customer }, property),
  );
  const sum = rows[0]!.sum;
  return sum.includes(".") ? sum.replace(/0+$/, "").replace(/\.$/, "") : sum;
}

describe("SDK against the real edge", () => {
  it("SIGKILL and restart of the edge while the SDK is sending: every event counted exactly once, exact sum", async () => {
    const errors: TallyError[] = [];
    const tally = new Tally({
      url: `http://127.0.0.1:${port}`,
      apiKey: KEY,
      maxBatchSize: 200,
      requestTimeoutMs: 5_000,
      retry: { initialDelayMs: 50, maxDelayMs: 1_000, maxAttempts: 100 },
      onError: (e) => errors.push(e),
    });
    const total = 20_000;
    const first = 8_000;
    // 1.5 for every third event, 2 otherwise: the exact sum is known, and binary floats would drift.
    let halves = 0;
    const track = (i: number) => {
      const q = i % 3 === 0 ? 1.5 : 2;
      halves += q * 2;
      tally.track({ type: "api_call", customer: "sdk-kill", properties: { q, i } });
    };
    for (let i = 0; i < first; i++) track(i);
    // Kill once part of the first events is acknowledged and requests are still in flight.
    await eventually(() => Promise.resolve(tally.stats().acknowledged >= 1_000), 30_000, "first acks");
    expect(tally.stats().inFlightRequests).toBeGreaterThan(0);
    expect(tally.stats().acknowledged).toBeLessThan(first);
    edge!.kill("SIGKILL");
    expect(await exited(edge!)).toBe("SIGKILL");
    // Keep tracking while the edge is down: track() never blocks on the network.
    const t0 = performance.now();
    for (let i = first; i < total; i++) track(i);
    expect(performance.now() - t0).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(tally.stats().retries).toBeGreaterThan(0);
    expect(tally.stats().acknowledged).toBeLessThan(total);
    edge = await spawnEdge();
    await tally.close();

    expect(errors).toEqual([]);
    expect(tally.stats()).toMatchObject({ tracked: total, acknowledged: total, failed: 0, buffered: 0 });
    await eventually(
      async () => (await distinctCount(ch, config.clickhouse.database, "customer = 'sdk-kill'")) >= total,
      60_000,
      "all events in ClickHouse",
    );
    expect(await distinctCount(ch, config.clickhouse.database, "customer = 'sdk-kill'")).toBe(total);
    expect(await sumOf("sdk-kill", "q")).toBe(String(halves / 2));
    expect(await sumOf("sdk-kill", "i")).toBe(String((total * (total - 1)) / 2));
  });

  it("a refused batch is reported with the server's error and not retried", async () => {
    const errors: TallyError[] = [];
    const tally = new Tally({
      url: `http://127.0.0.1:${port}`,
      apiKey: "tally_wrong_key_0123456789",
      onError: (e) => errors.push(e),
    });
    tally.track({ type: "api_call", customer: "sdk-401" });
    await tally.close();
    expect(errors).toHaveLength(1);
    const err = errors[0] as TallyRejectedError;
    expect(err).toBeInstanceOf(TallyRejectedError);
    expect(err.status).toBe(401);
    expect(err.serverCode).toBe("unauthorized");
    expect(err.requestId).toEqual(expect.any(String));
    expect(tally.stats()).toMatchObject({ retries: 0, failed: 1 });

    // An event the server refuses (too old) fails the whole batch with the field named.
    const errors2: TallyError[] = [];
    const t2 = new Tally({ url: `http://127.0.0.1:${port}`, apiKey: KEY, onError: (e) => errors2.push(e) });
    t2.track({ type: "api_call", customer: "sdk-400", time: "2000-01-01T00:00:00Z" });
    await t2.close();
    const e2 = errors2[0] as TallyRejectedError;
    expect(e2).toMatchObject({ status: 400, serverCode: "invalid_events" });
    expect(e2.details).toMatchObject({
      invalid: 1,
      errors: [expect.objectContaining({ field: "time", code: "too_old" })],
    });
  });
});
