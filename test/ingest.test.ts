import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { distinctCount, eventually, get, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

describe("ingest happy path", () => {
  it("accepts one event and makes it countable", async () => {
    const r = await post(edge, {
      id: "e1",
      type: "api_call",
      customer: "acme",
      properties: { tokens: "12.5" },
    });
    expect(r).toEqual({ status: 202, body: { accepted: 1, duplicates: 0 } });
    await eventually(async () => (await get(edge, "/v1/events/count?customer=acme")).body.count === 1);
    const list = await get(edge, "/v1/events?customer=acme");
    expect(list.body.data[0]).toMatchObject({
      id: "e1",
      type: "api_call",
      customer: "acme",
      properties: { tokens: "12.5" },
    });
    expect(Date.parse(list.body.watermark)).toBeGreaterThan(0);
    expect(await distinctCount(ch, config.clickhouse.database)).toBe(1);
  });
});
