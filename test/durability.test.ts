import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startNats, type ServerProcess } from "../src/dev/servers.js";
import { tally } from "../src/gen/proto.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import {
  assertRewriteInvariant,
  distinctCount,
  eventually,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  usageCount,
} from "./helpers.js";

// This file runs its own nats-server so it can kill it.
let dir: string;
let nats: ServerProcess;
let config: Config;
let edge: RunningEdge;
let ch: ClickHouseClient;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tally-durable-"));
  nats = await startNats({ dataDir: dir });
  config = testConfig({ TALLY_NATS_URL: nats.url, TALLY_PUBLISH_TIMEOUT_MS: "1500" });
  ({ edge, ch } = await startTestEdge(config));
});
afterAll(async () => {
  await edge?.stop().catch(() => undefined);
  await ch?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Every event id stored in the events stream right now. */
async function idsInStream(): Promise<Set<string>> {
  const jsm = await edge.nc.jetstreamManager();
  const stream = busNames(config.nats.prefix).stream;
  const info = await jsm.streams.info(stream);
  const ids = new Set<string>();
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m) for (const e of tally.v1.BusBatch.decode(m.data).events) ids.add(e.id!);
  }
  return ids;
}

describe("durable before acknowledged", () => {
  it("a 202 means the events are in JetStream and survive a SIGKILL of nats-server", async () => {
    // No sink runs: the stream is the only place the events can be.
    const events = Array.from({ length: 200 }, (_, i) => ({ id: `d-${i}`, type: "t", customer: "durable" }));
    const results = await Promise.all([post(edge, events.slice(0, 100)), post(edge, events.slice(100))]);
    expect(results.map((r) => r.status)).toEqual([202, 202]);
    const stored = await idsInStream();
    for (const e of events) expect(stored.has(e.id)).toBe(true);

    // Kill the server without warning and start it again on the same port and data.
    nats.process.kill("SIGKILL");
    await new Promise((r) => nats.process.once("exit", r));
    nats = await startNats({ dataDir: dir, port: nats.port });
    await eventually(
      async () =>
        !edge.nc.isClosed() &&
        (await idsInStream().then(
          (s) => s.size,
          () => 0,
        )) >= 200,
      20_000,
      "reconnect",
    );
    const after = await idsInStream();
    for (const e of events) expect(after.has(e.id)).toBe(true);

    const sink = await startTestSink(config);
    await eventually(
      async () => (await distinctCount(ch, config.clickhouse.database, "customer = 'durable'")) === 200,
      30_000,
    );
    expect(await usageCount(ch, config.clickhouse.database, "durable")).toBe(200);
    await assertRewriteInvariant(ch, config.clickhouse.database);
    await sink.stop();
  });

  it("never answers 2xx while JetStream cannot acknowledge", async () => {
    nats.process.kill("SIGKILL");
    await new Promise((r) => nats.process.once("exit", r));
    const r = await post(edge, [{ id: "down-1", type: "t", customer: "down" }]);
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe("unavailable");
    nats = await startNats({ dataDir: dir, port: nats.port });
    await eventually(
      async () => (await post(edge, [{ id: "down-2", type: "t", customer: "down" }])).status === 202,
      20_000,
      "recovery",
    );
    await assertRewriteInvariant(ch, config.clickhouse.database);
  });
});
