import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import { lit, queryRows, sql, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { Meter } from "../src/catalog/index.js";
import { queryUsage } from "../src/usage/index.js";
import {
  assertRewriteInvariant,
  childEnv,
  distinctCount,
  eventually,
  post,
  startTestEdge,
  testConfig,
  usageCount,
} from "./helpers.js";

/** Runs `tally sink` as a real child process (so SIGKILL kills a real process). */
function spawnSink(config: Config, extraEnv: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ["dist/src/cli/main.js", "sink"], {
    env: { ...childEnv(config), ...extraEnv },
    stdio: ["ignore", "ignore", "inherit"],
  });
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

let config: Config;
let edge: RunningEdge;
let ch: ClickHouseClient;
const children: ChildProcess[] = [];

beforeAll(async () => {
  config = testConfig({
    TALLY_SINK_ACK_WAIT_MS: "2000",
    TALLY_SINK_BATCH_ROWS: "1500",
    TALLY_SINK_LINGER_MS: "20",
  });
  ({ edge, ch } = await startTestEdge(config));
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await edge?.stop();
  await ch?.close();
});

async function streamDrained(): Promise<boolean> {
  const jsm = await edge.nc.jetstreamManager();
  return (await jsm.streams.info(busNames(config.nats.prefix).stream)).state.messages === 0;
}

async function sumQ(customer: string): Promise<string> {
  const rows = await queryRows<{ sum: string }>(
    ch,
    sql.sumProperty(config.clickhouse.database, { customer }, "q"),
  );
  return rows[0]!.sum.replace(/\.0*$/, "");
}

/** Ids with rows that differ (e.g. two timestamps): would be counted twice by a time-window query. */
async function idsWithDifferingRows(customer: string): Promise<number> {
  const rows = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM (SELECT id, uniqExact(ts, prop_values) AS copies FROM ${config.clickhouse.database}.events WHERE customer = ${lit(customer)} GROUP BY id HAVING copies > 1)`,
  );
  return Number(rows[0]!.n);
}

describe("sink crashes", () => {
  it("SIGKILL mid-stream and restart: loses nothing, double counts nothing", async () => {
    const total = 30_000;
    const perRequest = 500;
    let sink = spawnSink(config);
    children.push(sink);
    let kills = 0;
    for (let r = 0; r < total / perRequest; r++) {
      const events = Array.from({ length: perRequest }, (_, i) => ({
        id: `k-${r}-${i}`,
        type: "t",
        customer: "crash",
        properties: { q: "1" },
      }));
      expect((await post(edge, events)).status).toBe(202);
      if (r === 15 || r === 35) {
        // Kill mid-stream: after the sink wrote part of what was accepted, not all of it.
        const accepted = (r + 1) * perRequest;
        await eventually(
          async () =>
            (await distinctCount(ch, config.clickhouse.database, "customer = 'crash'")) > accepted / 3,
          30_000,
        );
        expect(await distinctCount(ch, config.clickhouse.database, "customer = 'crash'")).toBeLessThan(total);
        sink.kill("SIGKILL");
        expect(await exited(sink)).toBe("SIGKILL");
        kills++;
        // Retry an accepted id while no sink runs, with another timestamp. Whichever copy the
        // sink processes first wins (the original may sit unacked until ack_wait); the other must
        // never be written, which idsWithDifferingRows checks.
        await post(edge, [
          { id: `k-${r}-0`, type: "t", customer: "crash", time: Date.now() - 5000, properties: { q: "1" } },
        ]);
        sink = spawnSink(config);
        children.push(sink);
      }
    }
    expect(kills).toBe(2);
    await eventually(
      async () => (await distinctCount(ch, config.clickhouse.database, "customer = 'crash'")) >= total,
      60_000,
      "all events",
    );
    await eventually(streamDrained, 30_000, "stream drained");
    // Counted through the usage path (what invoices use), which would show a double count.
    expect(await usageCount(ch, config.clickhouse.database, "crash")).toBe(total);
    expect(await sumQ("crash")).toBe(String(total));
    expect(await idsWithDifferingRows("crash")).toBe(0);
    await assertRewriteInvariant(ch, config.clickhouse.database);
    sink.kill("SIGTERM");
    expect(await exited(sink)).toBe(0);
  });

  it("a crash between the ledger insert and the events insert, or before the ack, then redelivery, counts once", async () => {
    // No sink of the previous test may still own the partitions.
    for (const c of children) c.kill("SIGKILL");
    await Promise.all(children.map(exited));
    // Insert #1 is the first ledger insert: the process dies before the event rows and the ack.
    const crashing = spawnSink(config, { TALLY_FAULT_CRASH_AFTER_INSERT: "1" });
    children.push(crashing);
    const events = Array.from({ length: 1000 }, (_, i) => ({
      id: `w-${i}`,
      type: "t",
      customer: "window",
      properties: { q: "0.5" },
    }));
    expect((await post(edge, events)).status).toBe(202);
    expect(await exited(crashing)).toBe("SIGKILL");
    // Then a crash after both inserts, before the ack (insert #2).
    const crashing2 = spawnSink(config, { TALLY_FAULT_CRASH_AFTER_INSERT: "2" });
    children.push(crashing2);
    expect(await exited(crashing2)).toBe("SIGKILL");
    const healthy = spawnSink(config);
    children.push(healthy);
    await eventually(streamDrained, 30_000, "stream drained");
    expect(await usageCount(ch, config.clickhouse.database, "window")).toBe(1000);
    await assertRewriteInvariant(ch, config.clickhouse.database);
    expect(await sumQ("window")).toBe("500");
    expect(await idsWithDifferingRows("window")).toBe(0);
    // The raw table may hold identical rewritten copies; reads never count them twice.
    const raw = await queryRows<{ n: string }>(
      ch,
      `SELECT toString(count()) AS n FROM ${config.clickhouse.database}.events WHERE customer = 'window'`,
    );
    expect(Number(raw[0]!.n)).toBeGreaterThanOrEqual(1000);
    // Every extra copy was announced in event_rewrites, so the usage path (which collapses only
    // announced ids) still answers exactly 1000 events and 500.
    const [recorded] = await queryRows<{ n: string }>(
      ch,
      `SELECT toString(uniqExact(id)) AS n FROM ${config.clickhouse.database}.event_rewrites WHERE customer = 'window'`,
    );
    // The first crash left ledger rows without event rows: the next sink rewrites those ids, so
    // records always exist here. Second copies usually do too (raw rows > 1000), unless a
    // background merge already folded them.
    expect(Number(recorded!.n)).toBeGreaterThan(0);
    const deps = {
      clickhouse: ch,
      database: config.clickhouse.database,
      watermarks: { current: () => Promise.resolve(Date.now()) },
    };
    const meter = (aggregation: "count" | "sum"): Meter => ({
      key: aggregation,
      event_type: "t",
      aggregation,
      ...(aggregation === "sum" ? { value_property: "q" } : {}),
      version: 1,
      applied_at: new Date().toISOString(),
    });
    const range = { customer: "window", fromMs: Date.now() - 3_600_000, toMs: Date.now() + 60_000 };
    expect((await queryUsage(deps, { meter: meter("count"), ...range })).data[0]!.value).toBe("1000");
    expect((await queryUsage(deps, { meter: meter("sum"), ...range })).data[0]!.value).toBe("500");
    healthy.kill("SIGTERM");
    expect(await exited(healthy)).toBe(0);
  });
});
