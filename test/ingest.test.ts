import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import { queryRows, sql, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { tally } from "../src/gen/proto.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { distinctCount, eventually, get, post, startTestEdge, startTestSink, testConfig } from "./helpers.js";

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let db: string;

beforeAll(async () => {
  config = testConfig();
  db = config.clickhouse.database;
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const countFor = async (customer: string) =>
  (await get(edge, `/v1/events/count?customer=${encodeURIComponent(customer)}`)).body.count as number;

describe("happy", () => {
  it("accepts one event, makes it countable and listable with a watermark", async () => {
    const r = await post(edge, {
      id: "e1",
      type: "api_call",
      customer: "acme",
      properties: { tokens: "12.5" },
    });
    expect(r).toEqual({ status: 202, body: { accepted: 1, duplicates: 0 } });
    await eventually(async () => (await countFor("acme")) === 1);
    const list = await get(edge, "/v1/events?customer=acme");
    expect(list.body.data[0]).toMatchObject({
      id: "e1",
      type: "api_call",
      customer: "acme",
      properties: { tokens: "12.5" },
    });
    const wm = Date.parse(list.body.watermark);
    expect(wm).toBeGreaterThan(Date.now() - 60_000);
    expect(await distinctCount(ch, db, "customer = 'acme'")).toBe(1);
  });

  it("accepts JSON arrays, NDJSON, protobuf EventBatch and gzip", async () => {
    const now = Date.now();
    const arr = [1, 2, 3].map((i) => ({ id: `arr-${i}`, type: "t", customer: "fmt", time: now - i }));
    expect((await post(edge, arr)).body).toEqual({ accepted: 3, duplicates: 0 });
    const nd =
      [4, 5].map((i) => JSON.stringify({ id: `nd-${i}`, type: "t", customer: "fmt" })).join("\n") + "\n";
    expect((await post(edge, nd, undefined, { "content-type": "application/x-ndjson" })).body).toEqual({
      accepted: 2,
      duplicates: 0,
    });
    const pb = tally.v1.EventBatch.encode({
      events: [
        {
          id: "pb-1",
          type: "t",
          customer: "fmt",
          time: new Date(now).toISOString(),
          properties: { gb: "1.25" },
        },
        { id: "pb-2", type: "t", customer: "fmt", timeMs: now - 5 },
      ],
    }).finish();
    expect((await post(edge, pb, undefined, { "content-type": "application/x-protobuf" })).body).toEqual({
      accepted: 2,
      duplicates: 0,
    });
    const gz = gzipSync(JSON.stringify([{ id: "gz-1", type: "t", customer: "fmt" }]));
    expect((await post(edge, gz, undefined, { "content-encoding": "gzip" })).body).toEqual({
      accepted: 1,
      duplicates: 0,
    });
    await eventually(async () => (await countFor("fmt")) === 8);
    const list = await get(edge, "/v1/events?customer=fmt&limit=100");
    const pb1 = list.body.data.find((e: any) => e.id === "pb-1");
    expect(pb1.properties).toEqual({ gb: "1.25" });
    expect(list.body.data.find((e: any) => e.id === "pb-2").time).toBe(new Date(now - 5).toISOString());
  });

  it("paginates the event debugger newest first with a cursor", async () => {
    const base = Date.now() - 10_000;
    const events = Array.from({ length: 25 }, (_, i) => ({
      id: `pg-${String(i).padStart(2, "0")}`,
      type: "t",
      customer: "pages",
      time: base + i,
    }));
    await post(edge, events);
    await eventually(async () => (await countFor("pages")) === 25);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: any } = await get(
        edge,
        `/v1/events?customer=pages&limit=10${cursor ? `&cursor=${cursor}` : ""}`,
      );
      seen.push(...page.body.data.map((e: any) => e.id));
      cursor = page.body.next_cursor;
    } while (cursor !== null);
    expect(seen).toEqual(events.map((e) => e.id).reverse());
    const ranged = await get(
      edge,
      `/v1/events/count?customer=pages&from=${base + 5}&to=${new Date(base + 10).toISOString()}`,
    );
    expect(ranged.body.count).toBe(5);
  });

  it("answers health and readiness", async () => {
    expect((await edge.app.request("/healthz")).status).toBe(200);
    const ready = await edge.app.request("/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: "ready",
      checks: { nats: true, clickhouse: true, schema: true },
    });
  });
});

describe("exactly once", () => {
  it("counts an id once when retried in another batch with another timestamp", async () => {
    const t0 = Date.now() - 60_000;
    expect(
      (
        await post(edge, [
          { id: "dup-1", type: "t", customer: "dup", time: t0, properties: { q: "2.5" } },
          { id: "dup-2", type: "t", customer: "dup", time: t0 },
        ])
      ).status,
    ).toBe(202);
    await eventually(async () => (await countFor("dup")) === 2);
    // Retry: different batch, different timestamp, different value. The first copy wins.
    const r = await post(edge, [
      { id: "dup-1", type: "t", customer: "dup", time: t0 + 30_000, properties: { q: "7" } },
      { id: "dup-3", type: "t", customer: "dup", time: t0 },
    ]);
    expect(r.status).toBe(202);
    await eventually(async () => (await countFor("dup")) === 3);
    await new Promise((res) => setTimeout(res, 500));
    expect(await countFor("dup")).toBe(3);
    const rows = await queryRows<{ id: string; ts: string }>(
      ch,
      `SELECT id, toString(ts) AS ts FROM ${db}.events WHERE customer = 'dup' ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: "dup-1", ts: String(t0) },
      { id: "dup-2", ts: String(t0) },
      { id: "dup-3", ts: String(t0) },
    ]);
    const sum = await queryRows<{ sum: string }>(ch, sql.sumProperty(db, { customer: "dup" }, "q"));
    expect(Number(sum[0]!.sum)).toBe(2.5);
  });

  it("reports ids repeated within one request as duplicates", async () => {
    const r = await post(edge, [
      { id: "same", type: "t", customer: "rep" },
      { id: "same", type: "t", customer: "rep" },
    ]);
    expect(r.body).toEqual({ accepted: 1, duplicates: 1 });
    await eventually(async () => (await countFor("rep")) === 1);
  });

  it("many small concurrent requests share JetStream publishes (group commit), each answered", async () => {
    const before = await groupCommitStats();
    const results = await Promise.all(
      Array.from({ length: 400 }, (_, i) => post(edge, { id: `gc-${i}`, type: "t", customer: "gc" })),
    );
    expect(results.every((r) => r.status === 202)).toBe(true);
    const after = await groupCommitStats();
    const publishes = after.count - before.count;
    const requests = after.sum - before.sum;
    expect(requests).toBe(400);
    expect(publishes).toBeLessThan(400);
    await eventually(async () => (await countFor("gc")) === 400);
  });

  it("sums 100,000 quantities of 0.1 to exactly 10000 through the whole pipeline", async () => {
    const batches = Array.from({ length: 20 }, (_, b) =>
      Array.from({ length: 5000 }, (_, i) => ({
        id: `x-${b}-${i}`,
        type: "t",
        customer: "exact",
        properties: { q: 0.1 },
      })),
    );
    for (const batch of batches) expect((await post(edge, batch)).status).toBe(202);
    await eventually(async () => (await countFor("exact")) === 100_000, 60_000);
    const sum = await queryRows<{ sum: string }>(ch, sql.sumProperty(db, { customer: "exact" }, "q"));
    expect(sum[0]!.sum.replace(/\.0*$/, "")).toBe("10000");
  });
});

async function groupCommitStats(): Promise<{ count: number; sum: number }> {
  const text = await (await edge.app.request("/metrics")).text();
  const count = Number(/^tally_publish_batch_requests_count (\S+)/m.exec(text)?.[1] ?? 0);
  const sum = Number(/^tally_publish_batch_requests_sum (\S+)/m.exec(text)?.[1] ?? 0);
  return { count, sum };
}

describe("errors", () => {
  it("rejects invalid events with every field error, and writes nothing", async () => {
    const jsm = await edge.nc.jetstreamManager();
    const names = busNames(config.nats.prefix);
    const before = (await jsm.streams.info(names.stream)).state.last_seq;
    const r = await post(edge, [
      { id: "ok-but-not-written", type: "t", customer: "bad" },
      { id: "b1", type: "t", customer: "bad", time: "2020-01-01T00:00:00Z" },
      { type: "t", customer: "bad" },
      { id: "b3", type: "t", customer: "bad", time: Date.now() + 3600_000 },
    ]);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("invalid_events");
    expect(r.body.error.details.invalid).toBe(3);
    expect(r.body.error.details.errors.map((e: any) => [e.index, e.field, e.code])).toEqual([
      [1, "time", "too_old"],
      [2, "id", "required"],
      [3, "time", "too_far_in_future"],
    ]);
    expect(r.body.error.requestId).toBeTruthy();
    expect((await jsm.streams.info(names.stream)).state.last_seq).toBe(before);
    await new Promise((res) => setTimeout(res, 300));
    expect(await countFor("bad")).toBe(0);
  });

  it("rejects JSON numbers that would lose precision instead of rounding them", async () => {
    const body =
      '[{"id":"p1","type":"t","customer":"imprecise","properties":{"q":1.00000000000000001234,"s":"1.00000000000000001234"}}]';
    const r = await post(edge, body);
    expect(r.status).toBe(400);
    // The one invalid_events layout: details = { invalid, errors: [...] }.
    expect(r.body.error.code).toBe("invalid_events");
    expect(r.body.error.details.errors[0]).toMatchObject({
      index: 0,
      field: "properties.q",
      code: "imprecise_number",
    });
    const ok = await post(
      edge,
      '[{"id":"p2","type":"t","customer":"imprecise","properties":{"q":1.5000000000000000000,"s":"1.00000000000000001234"}}]',
    );
    expect(ok.status).toBe(202);
  });

  it("rejects malformed bodies, unknown content types and oversized requests", async () => {
    expect((await post(edge, "{not json")).body.error.code).toBe("invalid_request");
    const nd = await post(edge, '{"id":"a","type":"t","customer":"c"}\n{oops\n', undefined, {
      "content-type": "application/x-ndjson",
    });
    expect(nd.status).toBe(400);
    expect(nd.body.error.details).toMatchObject({ invalid: 1, errors: [{ index: 1, code: "invalid_json" }] });
    const xml = await post(edge, "<e/>", undefined, { "content-type": "text/xml" });
    expect([xml.status, xml.body.error.code]).toEqual([415, "unsupported_media_type"]);
    const big = await post(
      edge,
      JSON.stringify({
        id: "a",
        type: "t",
        customer: "c",
        properties: { p: "x".repeat(config.limits.maxBodyBytes) },
      }),
    );
    expect([big.status, big.body.error.code]).toEqual([413, "payload_too_large"]);
    const bomb = gzipSync(Buffer.alloc(config.limits.maxBodyBytes + 10, 32));
    expect((await post(edge, bomb, undefined, { "content-encoding": "gzip" })).status).toBe(413);
    const many = Array.from({ length: config.limits.maxEventsPerRequest + 1 }, (_, i) => ({
      id: `m${i}`,
      type: "t",
      customer: "c",
    }));
    expect((await post(edge, many)).status).toBe(413);
    expect((await get(edge, "/v1/events?limit=0")).body.error.details.errors[0].field).toBe("limit");
    expect((await get(edge, "/v1/events?from=yesterday")).body.error.details.errors[0].field).toBe("from");
    expect((await get(edge, "/v1/events?cursor=zzz")).body.error.details.errors[0].field).toBe("cursor");
  });
});

describe("security", () => {
  it("rejects requests without a valid key and enforces scopes", async () => {
    const ev = { id: "sec", type: "t", customer: "sec" };
    const none = await edge.app.request("/v1/events", { method: "POST", body: JSON.stringify(ev) });
    expect(none.status).toBe(401);
    expect((await post(edge, ev, "tally_wrong")).status).toBe(401);
    expect((await get(edge, "/v1/events/count", "tally_wrong")).status).toBe(401);

    const mk = async (scopes: string[]) => {
      const res = await edge.app.request("/v1/keys", {
        method: "POST",
        headers: {
          authorization: "Bearer tally_test_admin_key_0123456789",
          "content-type": "application/json",
        },
        body: JSON.stringify({ name: scopes.join("+"), scopes }),
      });
      expect(res.status).toBe(201);
      return (await res.json()) as { key: string; id: string };
    };
    const ingest = await mk(["ingest"]);
    const read = await mk(["read"]);
    expect((await post(edge, ev, ingest.key)).status).toBe(202);
    expect((await get(edge, "/v1/events/count", ingest.key)).status).toBe(403);
    expect((await post(edge, ev, read.key)).status).toBe(403);
    expect((await get(edge, "/v1/events/count", read.key)).status).toBe(200);
    expect((await get(edge, "/v1/keys", read.key)).status).toBe(403);

    // Keys are stored hashed: the plaintext never appears in the KV bucket.
    const kv = await edge.nc.jetstream().views.kv(busNames(config.nats.prefix).keysBucket);
    const stored: string[] = [];
    for await (const k of await kv.keys()) stored.push(k, (await kv.get(k))!.string());
    expect(stored.join("\n")).not.toContain(ingest.key);

    const del = await edge.app.request(`/v1/keys/${ingest.id}`, {
      method: "DELETE",
      headers: { authorization: "Bearer tally_test_admin_key_0123456789" },
    });
    expect(del.status).toBe(204);
    expect((await post(edge, ev, ingest.key)).status).toBe(401);
  });

  it("round-trips hostile ids, customers and properties unchanged", async () => {
    const hostile = [
      "'; DROP TABLE events; --",
      "a\"b\\c'd",
      "\\",
      "emoji 😀 ∑ עברית",
      "line\nbreak\ttab\u0000nul",
      "{x:String}",
      "`backtick`",
    ];
    const events = hostile.map((h, i) => ({
      id: `${h}#${i}`,
      type: "t",
      customer: "hostile",
      properties: { [`k${i}`]: h, note: h },
    }));
    expect((await post(edge, events)).status).toBe(202);
    await eventually(async () => (await countFor("hostile")) === hostile.length);
    const list = await get(edge, "/v1/events?customer=hostile&limit=100");
    for (const [i, h] of hostile.entries()) {
      const got = list.body.data.find((e: any) => e.id === `${h}#${i}`);
      expect(got).toBeDefined();
      expect(got.properties).toEqual({ [`k${i}`]: h, note: h });
    }
    const hostileCustomer = 'o\'brien \\ "quoted"';
    await post(edge, { id: "hc", type: "t", customer: hostileCustomer });
    await eventually(async () => (await countFor(hostileCustomer)) === 1);
  });
});

describe("parameters and headers", () => {
  it("answers time parameters outside 1970..9999 with a 400 naming them, on /v1/events and /v1/usage", async () => {
    // from=8700000000000000 (past JavaScript's last date) answered 500 on /v1/usage.
    const cases = [
      ["from", "from=8700000000000000&to=8700000000001000"],
      ["from", "from=253402300800000&to=253402300801000"], // 10000-01-01
      ["from", "from=0000-01-01T00:00:00Z&to=0000-01-02T00:00:00Z"],
      ["to", "to=99999999999999999"],
    ] as const;
    for (const path of ["/v1/events?", "/v1/events/count?", "/v1/usage?meter=calls&"]) {
      for (const [field, query] of cases) {
        const r = await get(edge, `${path}${query}`);
        expect([r.status, r.body.error?.code], `${path}${query}`).toEqual([400, "invalid_request"]);
        expect(r.body.error.details.errors[0].field).toBe(field);
      }
    }
    const edgeOfRange = await get(edge, "/v1/events/count?from=0&to=9999-12-31T23:59:59.999Z");
    expect(edgeOfRange.status).toBe(200);
  });

  it("tells a client using another Authorization scheme to use Bearer", async () => {
    const res = await edge.app.request("/v1/events/count", {
      headers: { authorization: `Basic ${Buffer.from("user:pass").toString("base64")}` },
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as any).error.message).toMatch(/must use the Bearer scheme/);
  });

  it("names an unknown field of a JSON body as the field (POST /v1/keys)", async () => {
    const res = await edge.app.request("/v1/keys", {
      method: "POST",
      headers: {
        authorization: "Bearer tally_test_admin_key_0123456789",
        "content-type": "application/json",
      },
      body: JSON.stringify({ name: "k", scopes: ["read"], extra: 1, other: 2 }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as any;
    expect(body.error.details).toEqual({
      errors: [
        { field: "extra", code: "unknown_field", message: "unknown field" },
        { field: "other", code: "unknown_field", message: "unknown field" },
      ],
    });
    expect(body.error.message).toBe("extra: unknown field; other: unknown field");
  });
});
