import { afterAll, beforeAll, expect, it } from "vitest";
import { queryRows, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  distinctCount,
  eventually,
  guid,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  usageCount,
  assertRewriteInvariant,
} from "./helpers.js";

// Sustained load of ~10 KB bus messages: every accepted event becomes countable, exactly once,
// and no message is written twice. Catches a sink that lets messages it still holds (buffered
// behind a slow flush) reach ack_wait and be redelivered. (The byte-bounded prefetch that once
// stalled the pull loop under `bench ingest` did not reproduce at this size; see partition-worker.)

let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let db: string;

beforeAll(async () => {
  const config = testConfig({ TALLY_PARTITIONS: "4" });
  db = config.clickhouse.database;
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

it("keeps writing under sustained batch load: 600 requests x 100 events, all countable once", async () => {
  const customer = `load-${guid()}`;
  const requests = 600;
  const perRequest = 100;
  const padding = "x".repeat(60);
  let next = 0;
  const worker = async () => {
    for (let r = next++; r < requests; r = next++) {
      const events = Array.from({ length: perRequest }, (_, i) => ({
        id: `${customer}-${r}-${i}`,
        type: "api_call",
        customer,
        properties: { tokens: "1", note: padding },
      }));
      expect((await post(edge, events)).status).toBe(202);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await eventually(
    async () => (await distinctCount(ch, db, `customer = '${customer}'`)) === requests * perRequest,
    45_000,
    "every accepted event countable",
  );
  // Nothing is written twice: held messages are kept alive, so none is redelivered to this
  // healthy sink. (Were one redelivered, its copy would be identical and merge away later.)
  await new Promise((r) => setTimeout(r, 4_000)); // > the test's 3 s ack wait
  const [raw] = await queryRows<{ n: string }>(ch, `SELECT toString(count()) AS n FROM ${db}.events`);
  expect(Number(raw!.n)).toBe(requests * perRequest);
  expect(await usageCount(ch, db, customer, "api_call")).toBe(requests * perRequest);
  await assertRewriteInvariant(ch, db);
});
