import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames, Watermarks } from "../src/bus/index.js";
import { lit, queryRows, sql, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startClose, type RunningClose } from "../src/runtime/close.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { queryUsage, type UsageDeps } from "../src/usage/index.js";
import { ADMIN_KEY, log, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

/**
 * The looping close role runs the rollup filler (TALLY_ROLLUP_INTERVAL) under its leader lease:
 * a real edge, sink and close role on the suite's servers; the meter's closed receive hours end
 * up in `usage_rollup` and queryUsage answers the same from it as from raw events.
 */
const HOUR = 3_600_000;
const hourStart = Math.floor(Date.now() / HOUR) * HOUR;

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let close: RunningClose;

beforeAll(async () => {
  config = testConfig({ TALLY_ROLLUP_INTERVAL: "1s" });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const applied = await edge.app.request("/v1/catalog", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/yaml" },
    body: `meters:\n  - { key: calls, event_type: api_call, aggregation: count }\n`,
  });
  expect(applied.status).toBe(200);
});
afterAll(async () => {
  await close?.stop();
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

describe("rollup filler in the close role", () => {
  it("fills the closed receive hours of every meter while the close role leads; answers stay equal", async () => {
    const db = config.clickhouse.database;
    // Events received two and three hours ago (closed hours) as the sink stored them, and one
    // through the edge now (the open hour: read from raw events).
    const old = [3, 2].map((h, i) => {
      const t = hourStart - h * HOUR + 60_000;
      return `(${["acme", "api_call", t, `old-${i}`, t + 5, "sdk", [], []].map((v) => lit(v)).join(", ")})`;
    });
    await ch.command({
      query: `INSERT INTO ${sql.eventsTable(db)} (customer, type, ts, id, received, source, prop_keys, prop_values) VALUES ${old.join(", ")}`,
    });
    const now = { id: "now-0", type: "api_call", customer: "acme", time: new Date().toISOString() };
    expect((await post(edge, [now])).status).toBe(202);

    const names = busNames(config.nats.prefix);
    const watermarks = new Watermarks(
      await edge.nc.jetstreamManager(),
      names,
      config.nats.partitions,
      0,
      log,
    );
    const deps: UsageDeps = { clickhouse: ch, database: db, watermarks };
    const meter = edge.catalog.get("calls")!;
    const req = { meter, customer: "acme", fromMs: hourStart - 4 * HOUR, toMs: hourStart + HOUR };
    await expect
      .poll(async () => (await queryUsage({ ...deps, rollups: "off" }, req)).data[0]?.value, {
        timeout: 10_000,
      })
      .toBe("3");

    close = await startClose(config, log, true);
    const filled = async () =>
      queryRows<{ r_from: string; rows: string }>(
        ch,
        `SELECT toString(r_from) AS r_from, toString((SELECT count() FROM ${db}.usage_rollup WHERE meter = 'calls')) AS rows
FROM ${db}.rollup_fills WHERE meter = 'calls' AND meter_version = ${lit(meter.version)}`,
      );
    await expect
      .poll(async () => (await filled()).length, { timeout: 15_000, interval: 250 })
      .toBeGreaterThan(0);
    const [first] = await filled();
    expect(first!.r_from).toBe("0");
    // Both old events' receive hours are closed: the rollup holds them (one row each).
    expect(first!.rows).toBe("2");
    const [viaRollup, raw] = await Promise.all([
      queryUsage(deps, req),
      queryUsage({ ...deps, rollups: "off" }, req),
    ]);
    expect(viaRollup.data).toEqual(raw.data);
    expect(viaRollup.data[0]?.value).toBe("3");
  });
});
