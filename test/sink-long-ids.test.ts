import { afterAll, beforeAll, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import { startSink, type RunningSink } from "../src/runtime/sink.js";
import {
  assertRewriteInvariant,
  distinctCount,
  eventually,
  post,
  startTestEdge,
  log,
  testConfig,
  usageCount,
} from "./helpers.js";

// Item: ids near the 256-character limit must not push a ledger lookup past ClickHouse's
// max_query_size (262,144 bytes): the syntax error it causes was taken for bad data and the
// acknowledged events went to the dead-letter stream.

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  // One flush: everything posted arrives within the linger and under the batch size.
  config = testConfig({
    TALLY_PARTITIONS: "1",
    TALLY_SINK_LINGER_MS: "1500",
    TALLY_SINK_BATCH_ROWS: "20000",
  });
  ({ edge, ch } = await startTestEdge(config));
  // The suite's ClickHouse profile raises max_query_size to 64 MiB (src/dev/servers.ts), which
  // hid this bug: the sink here runs with the server's default, 262,144 bytes.
  sink = await startSink(
    {
      ...config,
      clickhouse: { ...config.clickhouse, url: `${config.clickhouse.url}/?ch_max_query_size=262144` },
    },
    log,
  );
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

/** A 256-character id, unique by `i`, full of characters that SQL literals must escape. */
function longId(i: number): string {
  const hostile = ["'", "\\", "\n", "\t", "\u0001", "\u001f", '"', "é", "\u0000", "\u007f"];
  let s = `id-${i}-`;
  for (let k = 0; s.length < 256; k++) s += hostile[(i + k) % hostile.length]!;
  return s.slice(0, 256);
}

it("3,000 distinct 256-character ids (escapes, quotes, backslashes) in one flush: all counted, nothing dead-lettered", async () => {
  const n = 3000;
  const events = Array.from({ length: n }, (_, i) => ({ id: longId(i), type: "t", customer: "long-ids" }));
  expect(new Set(events.map((e) => e.id)).size).toBe(n);
  expect(events.every((e) => e.id.length === 256)).toBe(true);
  expect((await post(edge, events)).status).toBe(202);

  const db = config.clickhouse.database;
  await eventually(
    async () => (await distinctCount(ch, db, "customer = 'long-ids'")) >= n,
    30_000,
    "all written",
  );
  expect(await usageCount(ch, db, "long-ids")).toBe(n);
  const jsm = await edge.nc.jetstreamManager();
  expect((await jsm.streams.info(busNames(config.nats.prefix).dlqStream)).state.messages).toBe(0);

  // The same ids again (an identical retry of the whole request): still counted once each.
  expect((await post(edge, events)).status).toBe(202);
  await eventually(
    async () => (await jsm.streams.info(busNames(config.nats.prefix).stream)).state.messages === 0,
    30_000,
    "retry consumed",
  );
  expect(await usageCount(ch, db, "long-ids")).toBe(n);
  expect((await jsm.streams.info(busNames(config.nats.prefix).dlqStream)).state.messages).toBe(0);
  await assertRewriteInvariant(ch, db);
});
