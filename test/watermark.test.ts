import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { eventually, get, guid, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

let config: Config;
let edge: RunningEdge;
let sink: RunningSink | undefined;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  await edge.catalog.apply([{ key: "wm_calls", event_type: "wm", aggregation: "count" }]);
  await eventually(() => Promise.resolve(edge.catalog.get("wm_calls") !== undefined), 5000, "meter");
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

/** Usage of the test meter through GET /v1/usage: the path invoices use. */
async function usage(customer: string) {
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  const r = await get(edge, `/v1/usage?meter=wm_calls&customer=${customer}&from=${from}&to=${to}`);
  expect(r.status).toBe(200);
  return { count: Number(r.body.data[0]?.value ?? 0), watermarkMs: Date.parse(r.body.watermark) };
}

describe("watermark", () => {
  it("stays behind a 202 while the sink is stopped, and passes it only once the events are countable", async () => {
    const customer = `wm-${guid()}`;
    const events = Array.from({ length: 300 }, (_, i) => ({ id: `${customer}-${i}`, type: "wm", customer }));
    for (let i = 0; i < events.length; i += 100) {
      expect((await post(edge, events.slice(i, i + 100))).status).toBe(202);
    }
    const accepted = Date.now();
    // No sink runs: nothing is in ClickHouse, so no read may claim to be complete up to the 202.
    // (A watermark that were simply "now" fails here.)
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const u = await usage(customer);
      expect(u.count).toBe(0);
      expect(u.watermarkMs).toBeLessThan(accepted);
    }
    // The events endpoints answer the same watermark.
    const listed = await get(edge, `/v1/events?customer=${customer}`);
    expect(Date.parse(listed.body.watermark)).toBeLessThan(accepted);
    expect(listed.body.dead_letter_pending).toBe(0);
    const counted = await get(edge, `/v1/events/count?customer=${customer}`);
    expect(Date.parse(counted.body.watermark)).toBeLessThan(accepted);

    sink = await startTestSink(config);
    let reads = 0;
    await eventually(
      async () => {
        const u = await usage(customer);
        reads++;
        // Every answer that claims completeness past the 202s must include all their events.
        if (u.watermarkMs >= accepted) {
          expect(u.count).toBe(events.length);
          return true;
        }
        return false;
      },
      30_000,
      "watermark passes the 202",
    );
    expect(reads).toBeGreaterThan(0);
  });
});
