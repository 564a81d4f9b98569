import { afterAll, beforeAll, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import { queryRows, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { LedgerFilter } from "../src/sink/ledger-filter.js";
import { sinkMetrics } from "../src/sink/metrics.js";
import {
  assertRewriteInvariant,
  eventually,
  post,
  startTestEdge,
  log,
  startTestSink,
  testConfig,
  usageCount,
} from "./helpers.js";

// The dedup Bloom filter (src/sink/ledger-filter.ts) must know every id already in the ledger
// when a sink takes a partition over: ids written by an earlier sink run, and ids this sink
// writes while its filter is still being built. Otherwise a re-sent event is taken for new and
// counted twice. Counts are asserted through queryUsage (the path invoices use).

let config: Config;
let edge: RunningEdge;
let ch: ClickHouseClient;
const sinks: RunningSink[] = [];

beforeAll(async () => {
  // The filter is built a lease TTL after the lease is taken: 8 s leaves the "still building"
  // phase long enough to be tested on purpose.
  config = testConfig({ TALLY_PARTITIONS: "4", TALLY_SINK_LEASE_TTL_MS: "8000", TALLY_SINK_BLOOM: "on" });
  ({ edge, ch } = await startTestEdge(config));
});
afterAll(async () => {
  for (const s of sinks) await s.stop().catch(() => undefined);
  await edge?.stop();
  await ch?.close();
});

async function drained(): Promise<boolean> {
  const jsm = await edge.nc.jetstreamManager();
  return (await jsm.streams.info(busNames(config.nats.prefix).stream)).state.messages === 0;
}

async function builds(): Promise<number> {
  const m = await sinkMetrics.filterBuildSeconds.get();
  return m.values.find((v) => v.metricName === "tally_sink_filter_build_seconds_count")?.value ?? 0;
}

async function skipped(): Promise<number> {
  return (await sinkMetrics.filterSkipped.get()).values[0]?.value ?? 0;
}

function events(customer: string, n: number, stampedMs: number, value = "1") {
  return Array.from({ length: n }, (_, i) => ({
    id: `${customer}-${i}-\t\\ü😀`,
    type: "t",
    customer,
    time: new Date(stampedMs + i).toISOString(),
    properties: { q: value },
  }));
}

async function send(list: ReturnType<typeof events>): Promise<void> {
  for (let i = 0; i < list.length; i += 500)
    expect((await post(edge, list.slice(i, i + 500))).status).toBe(202);
}

it("ids ledgered by an earlier sink run and ids written while the filter builds stay duplicates after takeover", async () => {
  const db = config.clickhouse.database;
  const n = 2000;
  const t0 = Date.now() - 60_000;

  // A previous sink run fills the ledger, then stops (its leases are given back).
  const first = await startTestSink(config);
  sinks.push(first);
  await send(events("before", n, t0));
  await eventually(async () => (await usageCount(ch, db, "before")) === n, 30_000, "first run written");
  await first.stop();

  // A new sink takes every partition over. Its filters are not built yet (a lease TTL away):
  // re-sends of the earlier ids go to the ClickHouse lookup; new ids written now must enter the
  // filter that is about to be built.
  const buildsBefore = await builds();
  const second = await startTestSink(config);
  sinks.push(second);
  await send(events("before", n, t0)); // identical retries
  await send(events("before", n, t0 + 5000, "2")); // retries with another time and content
  await send(events("during", n, t0));
  await eventually(drained, 30_000, "re-sends consumed while the filters build");
  expect(await builds(), "the filters must still be building in this phase").toBe(buildsBefore);
  expect(await usageCount(ch, db, "before")).toBe(n);
  expect(await usageCount(ch, db, "during")).toBe(n);

  // Once every partition's filter is built: re-sends of both sets are still duplicates, and new
  // ids are ruled out by the filter without a ClickHouse lookup.
  await eventually(async () => (await builds()) >= buildsBefore + 4, 60_000, "filters built");
  const skippedBefore = await skipped();
  await send(events("before", n, t0 + 9000, "3"));
  await send(events("during", n, t0 + 9000, "3"));
  await send(events("during", n, t0));
  await send(events("after", n, t0));
  await eventually(drained, 30_000, "re-sends consumed with the filters built");
  await eventually(async () => (await usageCount(ch, db, "after")) === n, 30_000, "new ids written");
  // Ids written with the filter in use (added to it before their ledger insert), re-sent.
  await send(events("after", n, t0 + 9000, "3"));
  await send(events("after", n, t0));
  await eventually(drained, 30_000, "re-sends of new ids consumed");
  expect(await usageCount(ch, db, "before")).toBe(n);
  expect(await usageCount(ch, db, "during")).toBe(n);
  expect(await usageCount(ch, db, "after")).toBe(n);
  // The filter answered "new" for (almost) all of the new ids: at most 1 % false positives.
  expect((await skipped()) - skippedBefore).toBeGreaterThanOrEqual(n * 0.99);
  expect((await skipped()) - skippedBefore).toBeLessThanOrEqual(n);
  await assertRewriteInvariant(ch, db);
}, 120_000);

it("a filter holds ids added while it is built, even those the ledger read did not see", async () => {
  // An insert sent while the build streams the ledger may land after the read began: the ids
  // were added (before the insert) and must be in the filter that replaces the old one.
  const db = config.clickhouse.database;
  const filter = new LedgerFilter({ ch, db, partition: 3, log, settleMs: 0, minCapacity: 1000 }).start();
  try {
    const racing = Array.from({ length: 500 }, (_, i) => `racing-${i}-ü`);
    filter.add(racing);
    expect(filter.ready).toBe(false);
    expect(filter.mayContain("anything")).toBe(true); // not built: everything goes to ClickHouse
    await eventually(() => Promise.resolve(filter.ready), 30_000, "filter built");
    for (const id of racing) expect(filter.mayContain(id)).toBe(true);
    // And the ledger's ids of the partition (written by the test above) are in it.
    const ledgered = await queryRows<{ id: string }>(
      ch,
      `SELECT id FROM ${db}.event_ids WHERE bus_partition = 3`,
    );
    expect(ledgered.length).toBeGreaterThan(0);
    for (const { id } of ledgered) expect(filter.mayContain(id)).toBe(true);

    // Past its capacity the filter is rebuilt from the ledger; ids added meanwhile are kept.
    const first = filter.filter!;
    const over = Array.from({ length: first.capacity + 1 }, (_, i) => `over-${i}`);
    filter.add(over);
    const racingRebuild = Array.from({ length: 500 }, (_, i) => `racing-rebuild-${i}`);
    filter.add(racingRebuild); // triggers the rebuild, journaled
    await eventually(() => Promise.resolve(filter.filter !== first), 30_000, "filter rebuilt");
    for (const id of racingRebuild) expect(filter.mayContain(id)).toBe(true);
    for (const { id } of ledgered) expect(filter.mayContain(id)).toBe(true);
  } finally {
    filter.stop();
  }
});
