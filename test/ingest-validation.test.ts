import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames, Watermarks } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Meter } from "../src/catalog/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { queryUsage, type UsageDeps } from "../src/usage/index.js";
import { tally } from "../src/gen/proto.js";
import { ADMIN_KEY, eventually, get, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let deps: UsageDeps;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const names = busNames(config.nats.prefix);
  deps = {
    clickhouse: ch,
    database: config.clickhouse.database,
    watermarks: new Watermarks(await edge.nc.jetstreamManager(), names, config.nats.partitions),
  };
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const meter = (aggregation: "count" | "sum", extra: Partial<Meter> = {}): Meter => ({
  key: aggregation,
  event_type: "api_call",
  aggregation,
  ...(aggregation === "sum" ? { value_property: "q" } : {}),
  version: 1,
  applied_at: new Date().toISOString(),
  ...extra,
});

/** What an invoice would say: the usage path, not a raw count of ids. */
async function usage(
  customer: string,
  aggregation: "count" | "sum",
  extra: Partial<Meter> = {},
): Promise<string> {
  const range = { customer, fromMs: Date.now() - 3_600_000, toMs: Date.now() + 60_000 };
  return (await queryUsage(deps, { meter: meter(aggregation, extra), ...range })).data[0]?.value ?? "0";
}

const listed = async (customer: string) =>
  (await get(edge, `/v1/events?customer=${encodeURIComponent(customer)}`)).body.data as {
    id: string;
    time: string;
    received_at: string;
    properties: Record<string, string>;
  }[];

async function deadLettered(): Promise<number> {
  const jsm = await edge.nc.jetstreamManager();
  return (await jsm.streams.info(busNames(config.nats.prefix).dlqStream)).state.messages;
}

describe("a lone surrogate cannot sink other customers' events", () => {
  it("rejects each bad string with invalid_unicode while 200 concurrent good events all count", async () => {
    const lone = "x-\ud800";
    const base = { type: "api_call", customer: "bad-unicode" };
    // One bad string per field, each in its own request, interleaved with the good traffic so
    // that they would share group-committed bus messages with it.
    const bad: [string, Record<string, unknown>][] = [
      ["id", { ...base, id: lone }],
      ["customer", { ...base, id: "b-customer", customer: lone }],
      ["source", { ...base, id: "b-source", source: lone }],
      [`properties.${lone}`, { ...base, id: "b-key", properties: { [lone]: "1" } }],
      ["properties.q", { ...base, id: "b-value", properties: { q: "\udc00" } }],
      ["properties.a.b", { ...base, id: "b-nested", properties: { a: { b: "1\ud83d" } } }],
    ];
    const good = Array.from({ length: 200 }, (_, i) => ({
      id: `good-${i}`,
      type: "api_call",
      customer: "good-unicode",
      // Well-formed non-ASCII text (astral emoji, CJK) must still pass.
      source: "svc-\u{1f600}-東京",
      properties: { q: "1", "ключ-\u{10ffff}": "✓" },
    }));
    const requests: Promise<{ status: number; body: any; field?: string }>[] = [];
    for (let i = 0; i < good.length; i++) {
      requests.push(post(edge, good[i]));
      const b = i % 33 === 0 ? bad[i / 33] : undefined;
      if (b !== undefined) requests.push(post(edge, b[1]).then((r) => ({ ...r, field: b[0] })));
    }
    const answers = await Promise.all(requests);

    const rejected = answers.filter((a) => a.field !== undefined);
    expect(rejected.length).toBe(bad.length);
    for (const a of rejected) {
      expect(a.status).toBe(400);
      expect(a.body.error.code).toBe("invalid_events");
      expect(a.body.error.details.errors).toEqual([
        { index: 0, field: a.field, code: "invalid_unicode", message: expect.any(String) },
      ]);
    }
    const accepted = answers.filter((a) => a.field === undefined);
    expect(accepted.every((a) => a.status === 202)).toBe(true);

    await eventually(async () => (await usage("good-unicode", "count")) === "200", 20_000, "200 counted");
    expect(await usage("good-unicode", "sum")).toBe("200");
    expect(await usage("bad-unicode", "count")).toBe("0");
    // The sink has read everything the edge published (the count is complete); nothing it read
    // was undecodable.
    expect(await deadLettered()).toBe(0);
  });

  it("rejects a lone surrogate on a vendor route too (OpenMeter CloudEvents)", async () => {
    const res = await edge.app.request("/api/v1/events", {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/cloudevents+json" },
      body: JSON.stringify({
        specversion: "1.0",
        id: "om-1",
        source: "s",
        type: "api_call",
        subject: "om-unicode",
        data: { q: "1\udfff" },
      }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { errors: { field: string; code: string }[] };
    expect(body.errors).toEqual([expect.objectContaining({ field: "data.q", code: "invalid_unicode" })]);
  });
});

describe("protobuf events without a time", () => {
  it("are accepted with the receive time (time_ms 0 is 'not set', not 1970)", async () => {
    const body = tally.v1.EventBatch.encode({
      events: [
        { id: "pb-no-time", type: "api_call", customer: "pb-time", properties: { q: "2" } },
        { id: "pb-ms", type: "api_call", customer: "pb-time", timeMs: Date.now() - 60_000 },
      ],
    }).finish();
    const before = Date.now();
    const r = await post(edge, body, undefined, { "content-type": "application/x-protobuf" });
    const after = Date.now();
    expect(r).toEqual({ status: 202, body: { accepted: 2, duplicates: 0 } });
    await eventually(async () => (await usage("pb-time", "count")) === "2", 20_000, "2 counted");
    const noTime = (await listed("pb-time")).find((e) => e.id === "pb-no-time")!;
    expect(Date.parse(noTime.time)).toBeGreaterThanOrEqual(before);
    expect(Date.parse(noTime.time)).toBeLessThanOrEqual(after);
    expect(noTime.time).toBe(noTime.received_at);
  });
});

describe("properties mean one thing", () => {
  it("refuses keys that collide after flattening and __proto__, naming them", async () => {
    const r = await post(
      edge,
      '[{"id":"k1","type":"api_call","customer":"keys","properties":{"a.b":"1","a":{"b":"2"}}},' +
        '{"id":"k2","type":"api_call","customer":"keys","properties":{"__proto__":"1"}}]',
    );
    expect(r.status).toBe(400);
    expect(r.body.error.details.errors).toEqual([
      { index: 0, field: "properties.a.b", code: "duplicate_key", message: expect.any(String) },
      { index: 1, field: "properties.__proto__", code: "reserved_key", message: expect.any(String) },
    ]);
  });

  it("keeps constructor and prototype exactly, for the debugger and for meters", async () => {
    const r = await post(
      edge,
      '{"id":"ctor","type":"api_call","customer":"ctor","properties":{"constructor":"3","prototype":{"x":"y"},"q":"1"}}',
    );
    expect(r.status).toBe(202);
    await eventually(async () => (await usage("ctor", "count")) === "1", 20_000, "counted");
    expect((await listed("ctor"))[0]!.properties).toEqual({ constructor: "3", "prototype.x": "y", q: "1" });
    expect(await usage("ctor", "sum", { value_property: "constructor" })).toBe("3");
    expect(
      await usage("ctor", "sum", {
        value_property: "constructor",
        filters: [{ property: "prototype.x", equals: "y" }],
      }),
    ).toBe("3");
    expect(await usage("ctor", "count", { filters: [{ property: "constructor", equals: "4" }] })).toBe("0");
  });
});

describe("invalid_events has one shape on the native route", () => {
  it("names the event and field of an imprecise number", async () => {
    const r = await post(
      edge,
      '[{"id":"i1","type":"api_call","customer":"shape"},' +
        '{"id":"i2","type":"api_call","customer":"shape","properties":{"tokens":1.00000000000000001234}}]',
    );
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("invalid_events");
    expect(r.body.error.details).toEqual({
      invalid: 1,
      truncated: false,
      errors: [
        { index: 1, field: "properties.tokens", code: "imprecise_number", message: expect.any(String) },
      ],
    });
  });

  it("refuses a misspelt field instead of dropping it", async () => {
    const r = await post(edge, { id: "u1", type: "api_call", customer: "shape", propertes: { q: 1 } });
    expect(r.status).toBe(400);
    expect(r.body.error.details.errors).toEqual([
      { index: 0, field: "propertes", code: "unknown_field", message: expect.any(String) },
    ]);
  });
});
