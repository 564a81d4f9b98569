import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clickHouseErrorCode,
  createClickHouse,
  createClickHouseReader,
  migrate,
  type ClickHouseClient,
} from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { clickHouseProbeUser, readProfile } from "../src/dev/servers.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import { queryUsage, type UsageDeps } from "../src/usage/index.js";
import { ADMIN_KEY, childEnv, eventually, guid, log, testConfig } from "./helpers.js";

// Live streams are capped per API key and per portal token, and every read runs as the limited
// ClickHouse read user, so a crowd of streams cannot slow what the sink writes. Real edge
// (listening, in this process), `tally sink` as its own process (as deployed), NATS and
// ClickHouse; streams are real HTTP connections.

let config: Config;
let edge: RunningEdge;
let sink: ChildProcess | undefined;
let ch: ClickHouseClient;
let base: string;
const readKey = `tally_read_${guid()}_0123456789`;
const customer = `acme-${guid()}`;

async function api(path: string, init: RequestInit = {}) {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      "content-type": "application/json",
      ...(init.headers ?? {}),
    },
  });
  return { status: res.status, body: (await res.json()) as any };
}

interface OpenStream {
  status: number;
  body: any;
  retryAfter: string | null;
  abort: () => void;
}

/** Opens a live stream; a 200 stays open (its body is drained in the background) until aborted. */
async function openStream(
  query: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<OpenStream> {
  const ac = new AbortController();
  const res = await fetch(`${base}/v1/usage/stream?${new URLSearchParams(query).toString()}`, {
    headers,
    signal: ac.signal,
  });
  const abort = () => ac.abort();
  if (res.status !== 200) {
    return { status: res.status, body: await res.json(), retryAfter: res.headers.get("retry-after"), abort };
  }
  void res.body?.pipeTo(new WritableStream()).catch(() => {});
  return { status: 200, body: null, retryAfter: null, abort };
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/**
 * Ingest-to-countable: the time from a 202 to the event counted by queryUsage (as the sink
 * writes it, read as the sink's own user so read limits do not enter the measurement).
 */
async function ingestToCountable(samples: number): Promise<number[]> {
  const meter = edge.catalog.get("probes")!;
  const deps: UsageDeps = {
    clickhouse: ch,
    database: config.clickhouse.database,
    watermarks: { current: () => Promise.resolve(Date.now()) },
  };
  const probe = `probe-${guid()}`;
  const count = async () =>
    Number(
      (
        await queryUsage(deps, {
          meter,
          customer: probe,
          fromMs: Date.now() - 86_400_000,
          toMs: Date.now() + 60_000,
        })
      ).data[0]?.value ?? 0,
    );
  const out: number[] = [];
  for (let i = 1; i <= samples; i++) {
    const r = await api("/v1/events", {
      method: "POST",
      body: JSON.stringify([{ id: guid(), type: "probe", customer: probe }]),
    });
    expect(r.status).toBe(202);
    const accepted = performance.now();
    while ((await count()) < i) {
      if (performance.now() - accepted > 10_000) throw new Error(`probe ${i} not countable after 10 s`);
      await new Promise((res) => setTimeout(res, 20));
    }
    out.push(performance.now() - accepted);
  }
  return out;
}

beforeAll(async () => {
  config = testConfig({
    TALLY_HTTP_PORT: "0",
    TALLY_HTTP_HOST: "127.0.0.1",
    TALLY_USAGE_STREAM_INTERVAL_MS: "100",
    // Same profile as tally_read, its own per-user cap: this file saturates it on purpose.
    TALLY_CLICKHOUSE_READ_USER: clickHouseProbeUser,
  });
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  edge = await startEdge(config, log, true);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
  await edge.keys.put(readKey, "dashboard", ["read"]);
  sink = spawn(process.execPath, ["dist/src/cli/main.js", "sink"], {
    env: childEnv(config),
    stdio: ["ignore", "ignore", "inherit"],
  });
  base = `http://127.0.0.1:${edge.port}`;
  const applied = await fetch(`${base}/v1/catalog`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
    body: `meters:
  - { key: calls, event_type: api_call, aggregation: count, group_by: [region] }
  - { key: tokens, event_type: api_call, aggregation: sum, value_property: tokens }
  - { key: probes, event_type: probe, aggregation: count }
`,
  });
  expect(applied.status).toBe(200);
  // Something for the streams to read: 20,000 calls over the last 20 days.
  for (let b = 0; b < 4; b++) {
    const events = Array.from({ length: 5000 }, (_, i) => ({
      id: guid(),
      type: "api_call",
      customer,
      time: new Date(Date.now() - ((b * 5000 + i) % 20) * 86_400_000 - i * 1000).toISOString(),
      properties: { tokens: String(i % 7), region: ["eu", "us", "ap"][i % 3]! },
    }));
    expect((await api("/v1/events", { method: "POST", body: JSON.stringify(events) })).status).toBe(202);
  }
  // The sink process is up and has written them.
  await eventually(
    async () =>
      (
        await api(
          `/v1/usage?meter=calls&customer=${customer}&from=${Date.now() - 30 * 86_400_000}&to=${Date.now() + 60_000}`,
        )
      ).body.data?.reduce((a: number, r: { value: string }) => a + Number(r.value), 0) === 20_000,
    60_000,
    "the 20,000 calls countable",
  );
}, 120_000);

afterAll(async () => {
  if (sink !== undefined && sink.exitCode === null) {
    const exited = new Promise((r) => sink!.once("exit", r));
    sink.kill("SIGTERM");
    await exited;
  }
  await edge?.stop();
  await ch?.close();
});

describe("live streams: caps per portal token and per API key", () => {
  it("admits a token's first 10 of 200 concurrent streams, answers 429 to the rest, and ingest stays countable within 2 s", async () => {
    const token = (
      await api("/v1/portal/tokens", { method: "POST", body: JSON.stringify({ customer, expires_in: 900 }) })
    ).body.token as string;
    const baseline = await ingestToCountable(10);

    // 200 streams from one token, each a different question (so each would be its own poller).
    const monthAgo = Date.now() - 30 * 86_400_000;
    const fromToken = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        openStream({
          meter: "calls",
          window: "hour",
          group_by: "region",
          from: String(monthAgo + i * 1000),
          token,
        }),
      ),
    );
    // And a dashboard's API key up to its own cap (100) plus one.
    const fromKey = await Promise.all(
      Array.from({ length: 101 }, (_, i) =>
        openStream(
          { meter: i % 2 === 0 ? "tokens" : "calls", window: "hour", from: String(monthAgo + i * 1000) },
          { authorization: `Bearer ${readKey}` },
        ),
      ),
    );
    try {
      const admitted = fromToken.filter((s) => s.status === 200).length;
      const refused = fromToken.filter((s) => s.status === 429);
      expect(admitted).toBe(config.usage.streamsPerToken);
      expect(refused).toHaveLength(200 - config.usage.streamsPerToken);
      expect(refused[0]!.body.error).toMatchObject({
        code: "rate_limited",
        details: { errors: [{ field: "token", code: "too_many_streams" }], limit: 10 },
      });
      expect(refused[0]!.body.error.message).toContain("at most 10 live usage streams");
      expect(refused[0]!.retryAfter).toBe("5");
      expect(fromKey.filter((s) => s.status === 200)).toHaveLength(100);
      expect(
        fromKey.filter((s) => s.status === 429).map((s) => s.body.error.details.errors[0].field),
      ).toEqual(["authorization"]);

      // 110 streams polling every 100 ms as the read user: the sink's writes are unaffected.
      await new Promise((r) => setTimeout(r, 1000));
      const loaded = await ingestToCountable(40);
      const report = (xs: number[]) =>
        `p50 ${percentile(xs, 50).toFixed(0)} ms, p99 ${percentile(xs, 99).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms`;
      console.info(
        `ingest-to-countable: without streams ${report(baseline)}; with the token's ${admitted} streams open (of 200 asked; 100 ms polls) ${report(loaded)}`,
      );
      expect(percentile(loaded, 99)).toBeLessThan(2000);
    } finally {
      for (const s of [...fromToken, ...fromKey]) s.abort();
    }

    // Closed streams give their slots back.
    await new Promise((r) => setTimeout(r, 500));
    const again = await openStream({ meter: "calls", token });
    expect(again.status).toBe(200);
    again.abort();
  }, 120_000);
});

describe("reads run as a ClickHouse user whose profile bounds them", () => {
  it("the read user cannot write and gets at most max_concurrent_queries_for_user reads at once, while the sink's user inserts", async () => {
    // More client connections than the profile allows queries, so the server's limit is what refuses.
    const reader = createClickHouseReader({
      ...config.clickhouse,
      read: { ...config.clickhouse.read, connections: 32 },
    });
    try {
      expect(config.clickhouse.read.user).toBe(clickHouseProbeUser);
      const write = await reader
        .command({ query: `CREATE TABLE ${config.clickhouse.database}.nope (x UInt8) ENGINE = Memory` })
        .catch((e: unknown) => e);
      expect(clickHouseErrorCode(write)).toBe("164"); // READONLY

      const n = readProfile.maxConcurrentQueries + 6;
      const slow = Array.from({ length: n }, () =>
        reader.query({ query: "SELECT sleep(2)", format: "JSONEachRow" }).then(
          async (rs) => {
            await rs.json();
            return "ok";
          },
          (e: unknown) => clickHouseErrorCode(e) ?? String(e),
        ),
      );
      await new Promise((r) => setTimeout(r, 300));
      // The sink's user is not limited by the reads: an insert goes through at once.
      const t0 = performance.now();
      await ch.insert({
        table: `${config.clickhouse.database}.events`,
        values: [
          {
            customer: "x",
            type: "x",
            ts: Date.now(),
            id: guid(),
            received: Date.now(),
            source: "test",
            prop_keys: [],
            prop_values: [],
          },
        ],
        format: "JSONEachRow",
      });
      const insertMs = performance.now() - t0;
      const outcomes = await Promise.all(slow);
      console.info(
        `${n} concurrent 2 s reads: ${JSON.stringify(outcomes)}; insert meanwhile took ${insertMs.toFixed(0)} ms`,
      );
      expect(outcomes.filter((o) => o === "ok").length).toBeLessThanOrEqual(readProfile.maxConcurrentQueries);
      expect(outcomes.filter((o) => o === "202")).toHaveLength(n - outcomes.filter((o) => o === "ok").length);
      expect(insertMs).toBeLessThan(1500);
    } finally {
      await reader.close();
    }
  }, 60_000);
});
