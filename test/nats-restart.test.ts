import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JetStreamManager, StoredMsg } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ackFloor, busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startNats, type ServerProcess } from "../src/dev/servers.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { eventually, get, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

// This file runs its own nats-server so it can SIGKILL it; everything else is the real stack.
let dir: string;
let nats: ServerProcess;
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tally-nats-restart-"));
  nats = await startNats({ dataDir: dir });
  // The default publish timeout (10 s): recovery must not depend on it being short.
  config = testConfig({ TALLY_NATS_URL: nats.url, TALLY_SINK_LINGER_MS: "20" });
  ({ edge, ch } = await startTestEdge(config));
  await edge.catalog.apply([{ key: "restart_calls", event_type: "restart", aggregation: "count" }]);
  await eventually(() => Promise.resolve(edge.catalog.get("restart_calls") !== undefined), 5000, "meter");
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop().catch(() => undefined);
  await edge?.stop().catch(() => undefined);
  await ch?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function killNats(): Promise<void> {
  nats.process.kill("SIGKILL");
  await new Promise((r) => nats.process.once("exit", r));
}

/** Usage of the test meter for one customer through GET /v1/usage (what invoices will use). */
async function usage(customer: string): Promise<{ count: number; watermarkMs: number; pending: number }> {
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  const r = await get(edge, `/v1/usage?meter=restart_calls&customer=${customer}&from=${from}&to=${to}`);
  expect(r.status).toBe(200);
  return {
    count: Number(r.body.data[0]?.value ?? 0),
    watermarkMs: Date.parse(r.body.watermark),
    pending: r.body.dead_letter_pending,
  };
}

/** Partitions where a message at or below the sink consumer's ack floor is still stored. */
async function leftoverPartitions(jsm: JetStreamManager): Promise<number[]> {
  const names = busNames(config.nats.prefix);
  const out: number[] = [];
  for (let p = 0; p < config.nats.partitions; p++) {
    const floor = await ackFloor(jsm, names, p);
    const direct = (jsm as unknown as { direct: { getMessage(s: string, q: object): Promise<StoredMsg> } })
      .direct;
    const first = await direct
      .getMessage(names.stream, { seq: 0, next_by_subj: names.subject(p) })
      .catch(() => null);
    if (first !== null && first.seq <= floor) out.push(p);
  }
  return out;
}

/**
 * Clients posting batches of fresh ids until stopped; a batch answered with anything but 202 is
 * retried as is (what the SDK does), so every id ends up acknowledged exactly once as far as
 * the client knows. Records when each 202 arrived.
 */
function load(customer: string, workers = 6, batch = 40) {
  let stop = false;
  let sent = 0;
  const okTimes: number[] = [];
  const failures: number[] = [];
  const run = async (w: number) => {
    for (let b = 0; !stop; b++) {
      const events = Array.from({ length: batch }, (_, i) => ({
        id: `${customer}-${w}-${b}-${i}`,
        type: "restart",
        customer,
      }));
      for (;;) {
        const r = await post(edge, events).catch(() => ({ status: 0 }));
        if (r.status === 202) {
          okTimes.push(Date.now());
          sent += batch;
          break;
        }
        failures.push(Date.now());
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  };
  const done = Promise.all(Array.from({ length: workers }, (_, w) => run(w)));
  return {
    okTimes,
    failures,
    sent: () => sent,
    async stop() {
      stop = true;
      await done;
    },
  };
}

describe("a nats-server SIGKILL and restart under load", () => {
  it("ingest answers 202 within 2 s of NATS being back, and the watermark moves past the restart", async () => {
    const customer = `restart-${Date.now()}`;
    const l = load(customer);
    const jsm = await edge.nc.jetstreamManager();
    // The frozen watermark needs acked messages left on disk by the kill (most kills under load
    // leave some): kill again (at most 3 times) until that state exists, so the test always
    // exercises it. No read runs meanwhile (reads delete such leftovers once proven written).
    const cycles: { downMs: number; firstAcceptedAfterUpMs: number }[] = [];
    let leftovers: number[] = [];
    while (leftovers.length === 0 && cycles.length < 3) {
      await new Promise((r) => setTimeout(r, 1500));
      await killNats();
      const killedAt = Date.now();
      await new Promise((r) => setTimeout(r, 1000));
      nats = await startNats({ dataDir: dir, port: nats.port });
      const upAt = Date.now();
      await eventually(
        () => Promise.resolve(l.okTimes.some((t) => t >= upAt)),
        15_000,
        "a 202 after the restart",
      );
      cycles.push({
        downMs: upAt - killedAt,
        firstAcceptedAfterUpMs: l.okTimes.find((t) => t >= upAt)! - upAt,
      });
      await new Promise((r) => setTimeout(r, 1000));
      leftovers = await leftoverPartitions(jsm);
    }
    await l.stop();
    const lastOk = Math.max(...l.okTimes);
    expect(leftovers.length).toBeGreaterThan(0);

    // Everything acknowledged is counted once through the usage API...
    await eventually(async () => (await usage(customer)).count >= l.sent(), 60_000, "all counted");
    const countedAt = Date.now();
    expect((await usage(customer)).count).toBe(l.sent());
    // ...and then the watermark passes the last 202 promptly (it froze at the kill before).
    await eventually(async () => (await usage(customer)).watermarkMs > lastOk, 10_000, "watermark moves");
    const caughtUp = Date.now();
    const after = await usage(customer);
    expect(after.count).toBe(l.sent());
    expect(after.pending).toBe(0);
    // Acked messages left on disk by the kill were removed.
    expect(await leftoverPartitions(jsm)).toEqual([]);

    process.stdout.write(
      `${JSON.stringify({
        events: l.sent(),
        cycles,
        leftoverPartitionsAfterRestart: leftovers,
        watermarkCatchUpAfterCountedMs: caughtUp - countedAt,
        watermarkCatchUpAfterLast202Ms: caughtUp - lastOk,
      })}\n`,
    );
    for (const c of cycles) expect(c.firstAcceptedAfterUpMs).toBeLessThanOrEqual(2000);
  }, 120_000);
});
