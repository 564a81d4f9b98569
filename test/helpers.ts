import { randomBytes } from "node:crypto";
import { inject } from "vitest";
import type { Meter } from "../src/catalog/index.js";
import { createClickHouse, migrate, queryRows, type ClickHouseClient } from "../src/clickhouse/index.js";
import { loadConfig, type Config } from "../src/config/index.js";
import { createLogger } from "../src/observability/index.js";
import type { RunningClose } from "../src/runtime/close.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import { startSink, type RunningSink } from "../src/runtime/sink.js";
import { queryUsage } from "../src/usage/index.js";

export const log = createLogger("test", process.env.TEST_LOG_LEVEL ?? "silent");

/** A unique lowercase name for this test's NATS objects and ClickHouse database. */
export function guid(): string {
  return `t${randomBytes(5).toString("hex")}`;
}

/** Config pointing at the suite's servers, isolated by a fresh prefix and database. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  const id = guid();
  return loadConfig({
    TALLY_NATS_URL: inject("natsUrl"),
    TALLY_CLICKHOUSE_URL: inject("clickhouseUrl"),
    // Reads run as the limited read user that src/dev/servers.ts configures, as in dev.
    TALLY_CLICKHOUSE_READ_USER: "tally_read",
    TALLY_NATS_PREFIX: id,
    TALLY_CLICKHOUSE_DATABASE: id,
    TALLY_STREAM_MAX_BYTES: String(256 * 1024 * 1024),
    TALLY_SINK_LINGER_MS: "50",
    TALLY_SINK_METRICS_PORT: "0",
    TALLY_SINK_ACK_WAIT_MS: "3000",
    // Short leases: a killed sink's partitions are taken over within seconds.
    TALLY_SINK_LEASE_TTL_MS: "3000",
    TALLY_LOG_LEVEL: "silent",
    ...overrides,
  });
}

export const ADMIN_KEY = "tally_test_admin_key_0123456789";

/** Env for a child `tally` process using the same config. */
export function childEnv(config: Config): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TALLY_NATS_URL: config.nats.url,
    TALLY_CLICKHOUSE_URL: config.clickhouse.url,
    TALLY_CLICKHOUSE_READ_USER: config.clickhouse.read.user,
    TALLY_NATS_PREFIX: config.nats.prefix,
    TALLY_CLICKHOUSE_DATABASE: config.clickhouse.database,
    TALLY_PARTITIONS: String(config.nats.partitions),
    TALLY_SINK_LINGER_MS: String(config.sink.lingerMs),
    TALLY_SINK_ACK_WAIT_MS: String(config.sink.ackWaitMs),
    TALLY_SINK_BATCH_ROWS: String(config.sink.batchRows),
    TALLY_SINK_LEASE_TTL_MS: String(config.sink.leaseTtlMs),
    TALLY_SINK_METRICS_PORT: "0",
    TALLY_STREAM_MAX_BYTES: String(config.nats.streamMaxBytes),
    TALLY_LOG_LEVEL: "warn",
  };
}

/** Migrated database + edge (no listener; use `edge.app.request`) with an admin key. */
export async function startTestEdge(config: Config): Promise<{ edge: RunningEdge; ch: ClickHouseClient }> {
  const ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  const edge = await startEdge(config, log, false);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
  return { edge, ch };
}

export async function startTestSink(config: Config): Promise<RunningSink> {
  return startSink(config, log);
}

/** POSTs events as JSON to the in-process edge. */
export async function post(
  edge: RunningEdge,
  body: unknown,
  key = ADMIN_KEY,
  headers: Record<string, string> = {},
) {
  const res = await edge.app.request("/v1/events", {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body:
      typeof body === "string" ? body : body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** Applies a catalog document (YAML) through the admin API, as a user would. */
export async function applyCatalog(edge: RunningEdge, yaml: string) {
  const res = await edge.app.request("/v1/catalog", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/yaml" },
    body: yaml,
  });
  return { status: res.status, body: (await res.json()) as any };
}

/**
 * Runs close rounds (each waiting up to 5 s for the lease) until `n` documents were finalized,
 * at most 60 rounds; resolves with their ids in the order finalized.
 */
export async function closeUntilFinalized(close: RunningClose, n: number): Promise<string[]> {
  const finalized: string[] = [];
  for (let round = 0; round < 60 && finalized.length < n; round++) {
    const report = await close.runOnce({ waitMs: 5000 });
    finalized.push(...(report?.finalized ?? []));
    if (finalized.length < n) await new Promise((r) => setTimeout(r, 250));
  }
  return finalized;
}

export async function get(edge: RunningEdge, path: string, key = ADMIN_KEY) {
  const res = await edge.app.request(path, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: (await res.json()) as any };
}

/** Polls until `fn` returns true or the timeout passes. */
export async function eventually(
  fn: () => Promise<boolean>,
  timeoutMs = 30_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Distinct ids in ClickHouse. NOTE: `uniqExact(id)` hides double counts; use it only to wait for
 * progress, and assert counts with {@link usageCount} (the path invoices use).
 */
export async function distinctCount(ch: ClickHouseClient, db: string, where = "1"): Promise<number> {
  const rows = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(uniqExact(id)) AS n FROM ${db}.events WHERE ${where}`,
  );
  return Number(rows[0]!.n);
}

/**
 * Events of a customer (and type) as the usage API counts them: `queryUsage` with a `count`
 * meter over the whole backfill horizon, the path invoices use. A double count shows here.
 */
export async function usageCount(
  ch: ClickHouseClient,
  db: string,
  customer: string,
  eventType = "t",
): Promise<number> {
  const meter: Meter = {
    key: "count",
    event_type: eventType,
    aggregation: "count",
    version: 1,
    applied_at: new Date().toISOString(),
  };
  const deps = { clickhouse: ch, database: db, watermarks: { current: () => Promise.resolve(Date.now()) } };
  const r = await queryUsage(deps, {
    meter,
    customer,
    fromMs: Date.now() - 40 * 86_400_000,
    toMs: Date.now() + 86_400_000,
  });
  return Number(r.data[0]?.value ?? "0");
}

/**
 * The invariant the usage path relies on: every id with more than one row in `events` is
 * recorded in `event_rewrites` (written before the second copy), and all rows of an id are
 * identical. Call after every crash, chaos and load test. Throws naming up to 10 offenders.
 */
export async function assertRewriteInvariant(ch: ClickHouseClient, db: string): Promise<void> {
  const unrecorded = await queryRows<{ id: string; n: string }>(
    ch,
    `SELECT id, toString(count()) AS n FROM ${db}.events GROUP BY id HAVING count() > 1
       AND id NOT IN (SELECT id FROM ${db}.event_rewrites) ORDER BY id LIMIT 10`,
  );
  if (unrecorded.length > 0) {
    throw new Error(
      `ids with several rows in events but no rewrite record (counted twice by the usage API): ${JSON.stringify(unrecorded)}`,
    );
  }
  const differing = await queryRows<{ id: string }>(
    ch,
    `SELECT id FROM ${db}.events GROUP BY id
       HAVING uniqExact(customer, type, ts, source, prop_keys, prop_values) > 1 ORDER BY id LIMIT 10`,
  );
  if (differing.length > 0) {
    throw new Error(`ids whose rows differ: ${JSON.stringify(differing.map((r) => r.id))}`);
  }
}

/** Rows in `event_rewrites` (second copies announced by the sink). */
export async function rewriteRecords(ch: ClickHouseClient, db: string, where = "1"): Promise<number> {
  const rows = await queryRows<{ n: string }>(
    ch,
    `SELECT toString(count()) AS n FROM ${db}.event_rewrites WHERE ${where}`,
  );
  return Number(rows[0]!.n);
}

/** An event row as tests write it straight into `events` (the differential usage tests). */
export interface RawEventRow {
  customer: string;
  type: string;
  ts: number;
  id: string;
  received: number;
  props: Record<string, string>;
}

/** Deterministic pseudo-random numbers (a test that fails must fail the same way again). */
export function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}
