import { afterAll, beforeAll, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import { queryRows, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  assertRewriteInvariant,
  eventually,
  post,
  rewriteRecords,
  startTestEdge,
  startTestSink,
  testConfig,
  usageCount,
} from "./helpers.js";

// Item: an identical retry (the SDK keeps the time it stamped: same id, same fingerprint) of an
// event already written must be dropped, not written again with a rewrite record; otherwise
// almost every customer-month takes the usage path's slower two-branch read.

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig({ TALLY_PARTITIONS: "4" });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

async function drained(): Promise<boolean> {
  const jsm = await edge.nc.jetstreamManager();
  return (await jsm.streams.info(busNames(config.nats.prefix).stream)).state.messages === 0;
}

it("a retry storm of identical, already-written events writes no rewrite records and no second rows", async () => {
  const db = config.clickhouse.database;
  const n = 2000;
  const rounds = 5;
  const stamped = Date.now() - 60_000;
  const events = Array.from({ length: n }, (_, i) => ({
    id: `retry-${i}`,
    type: "t",
    customer: "storm",
    time: new Date(stamped + i).toISOString(),
    properties: { q: "1" },
  }));
  for (let i = 0; i < n; i += 500) expect((await post(edge, events.slice(i, i + 500))).status).toBe(202);
  await eventually(async () => (await usageCount(ch, db, "storm")) === n, 30_000, "first copies written");

  // The storm: every event re-sent identically, several times, in differently cut requests.
  const sends: Promise<{ status: number }>[] = [];
  for (let r = 0; r < rounds; r++) {
    const size = 100 + r * 150;
    for (let i = 0; i < n; i += size) sends.push(post(edge, events.slice(i, i + size)));
  }
  expect((await Promise.all(sends)).every((s) => s.status === 202)).toBe(true);
  await eventually(drained, 30_000, "retries consumed");

  const records = await rewriteRecords(ch, db, "customer = 'storm'");
  const [raw] = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM ${db}.events WHERE customer = 'storm'`,
  );
  process.stderr.write(
    `retry storm: ${n} events x ${rounds} identical retries -> ${records} rewrite records, ${raw!.n} rows\n`,
  );
  expect(records).toBe(0);
  expect(Number(raw!.n)).toBe(n);
  expect(await usageCount(ch, db, "storm")).toBe(n);
  await assertRewriteInvariant(ch, db);
});
