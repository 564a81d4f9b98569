import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  ADMIN_KEY,
  eventually,
  get,
  guid,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
} from "./helpers.js";

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let readKey: string;
let ingestKey: string;

const acme = `acme-${guid()}`;
const globex = `globex-${guid()}`;
const H = 3_600_000;
/** 2026-03-01T00:00:00Z; the test ingests March 2026 (Berlin's spring-forward is March 29). */
const march1 = Date.UTC(2026, 2, 1);

const meters = `
meters:
  - key: calls
    name: API calls
    event_type: api_call
    aggregation: count
    filters: [{ property: status, not_equals: failed }]
    group_by: [region]
  - key: tokens
    event_type: api_call
    aggregation: sum
    value_property: tokens
    group_by: [region]
  - key: users
    event_type: api_call
    aggregation: unique_count
    value_property: user
  - key: biggest
    event_type: api_call
    aggregation: max
    value_property: tokens
  - key: smallest
    event_type: api_call
    aggregation: min
    value_property: tokens
  - key: last_region
    event_type: api_call
    aggregation: latest
    value_property: region
  - key: storage
    event_type: storage
    aggregation: time_weighted_sum
    value_property: gb
    time_unit: hour
    unit: GB-hours
  - key: storage_avg
    event_type: storage
    aggregation: time_weighted_avg
    value_property: gb
  - key: seats
    event_type: seats
    aggregation: peak
    value_property: count
`;

const iso = (ms: number) => new Date(ms).toISOString();

async function request(path: string, init: RequestInit & { key?: string } = {}) {
  const { key = ADMIN_KEY, ...rest } = init;
  const res = await edge.app.request(path, {
    ...rest,
    headers: { ...(key === "" ? {} : { authorization: `Bearer ${key}` }), ...(rest.headers ?? {}) },
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body };
}

const usage = (params: Record<string, string>, key = ADMIN_KEY) =>
  request(`/v1/usage?${new URLSearchParams(params).toString()}`, { key });

beforeAll(async () => {
  // A long backfill horizon so the test can ingest March 2026 whatever day it runs on.
  config = testConfig({ TALLY_BACKFILL_DAYS: "3650", TALLY_USAGE_STREAM_INTERVAL_MS: "200" });
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  readKey = (
    await request("/v1/keys", { method: "POST", body: JSON.stringify({ name: "r", scopes: ["read"] }) })
  ).body.key;
  ingestKey = (
    await request("/v1/keys", { method: "POST", body: JSON.stringify({ name: "i", scopes: ["ingest"] }) })
  ).body.key;
  const applied = await request("/v1/catalog", {
    method: "POST",
    body: meters,
    headers: { "content-type": "application/yaml" },
  });
  expect(applied.status).toBe(200);

  const call = (id: string, t: number, props: Record<string, string>, customer = acme) => ({
    id,
    type: "api_call",
    customer,
    time: iso(t),
    properties: props,
  });
  const events = [
    // Berlin, March 28 (UTC+1): two calls in eu, one failed call (filtered out of `calls`).
    call("c1", Date.parse("2026-03-28T10:00:00Z"), { region: "eu", tokens: "0.1", user: "u1" }),
    call("c2", Date.parse("2026-03-28T11:00:00Z"), { region: "eu", tokens: "2.25", user: "u2" }),
    call("c3", Date.parse("2026-03-28T12:00:00Z"), {
      region: "eu",
      tokens: "1",
      user: "u1",
      status: "failed",
    }),
    // 2026-03-29T22:30Z is already March 30, 00:30 in Berlin (UTC+2 after the change).
    call("c4", Date.parse("2026-03-29T22:30:00Z"), { region: "us", tokens: "10", user: "u3" }),
    // March 29 in Berlin: 23 hours long.
    call("c5", Date.parse("2026-03-29T01:30:00Z"), { region: "us", tokens: "0.05", user: "u1" }),
    call("c6", Date.parse("2026-03-29T21:59:59Z"), { region: "eu", tokens: "not-a-number", user: "u4" }),
    // Another customer: never in acme's numbers.
    call("g1", Date.parse("2026-03-28T10:00:00Z"), { region: "eu", tokens: "1000", user: "x" }, globex),
    // Gauges: storage 10 GB from March 1 00:00 UTC, 20 GB from 12:00; seats 5, 9, 3.
    { id: "s1", type: "storage", customer: acme, time: iso(march1), properties: { gb: "10" } },
    { id: "s2", type: "storage", customer: acme, time: iso(march1 + 12 * H), properties: { gb: "20" } },
    { id: "p1", type: "seats", customer: acme, time: iso(march1), properties: { count: 5 } },
    { id: "p2", type: "seats", customer: acme, time: iso(march1 + H), properties: { count: 9 } },
    { id: "p3", type: "seats", customer: acme, time: iso(march1 + 2 * H), properties: { count: 3 } },
  ];
  expect((await post(edge, events)).status).toBe(202);
  // A retry of c1 with another timestamp in another batch: counted once (the first copy wins).
  expect(
    (
      await post(edge, [
        call("c1", Date.parse("2026-03-29T05:00:00Z"), { region: "eu", tokens: "0.1", user: "u1" }),
      ])
    ).status,
  ).toBe(202);
  await eventually(async () => {
    const r = await get(edge, `/v1/events/count?customer=${acme}`);
    return r.body.count === 11;
  });
  // Let the retry reach the sink too (it is dropped there as a duplicate).
  await eventually(async () => {
    const wm = Date.parse((await get(edge, `/v1/events/count?customer=${acme}`)).body.watermark);
    return wm > Date.now() - 5000;
  });
});

afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const berlinMarch = {
  from: "2026-03-28T00:00:00+01:00",
  to: "2026-03-31T00:00:00+02:00",
  tz: "Europe/Berlin",
};

describe("happy", () => {
  it("counts per Berlin day across the DST change: March 29 is 23 hours long", async () => {
    const r = await usage({ meter: "calls", customer: acme, window: "day", ...berlinMarch });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      meter: "calls",
      customer: acme,
      window: "day",
      tz: "Europe/Berlin",
      meter_version: 1,
    });
    expect(r.body.data).toEqual([
      { from: "2026-03-28T00:00:00+01:00", to: "2026-03-29T00:00:00+01:00", value: "2" },
      { from: "2026-03-29T00:00:00+01:00", to: "2026-03-30T00:00:00+02:00", value: "2" },
      { from: "2026-03-30T00:00:00+02:00", to: "2026-03-31T00:00:00+02:00", value: "1" },
    ]);
    const day = r.body.data[1];
    expect(Date.parse(day.to) - Date.parse(day.from)).toBe(23 * H);
    expect(Date.parse(r.body.watermark)).toBeGreaterThan(Date.now() - 60_000);
  });

  it("sums exact decimals, split by a dimension; non-decimal values are reported, not summed", async () => {
    const r = await usage({ meter: "tokens", customer: acme, group_by: "region", ...berlinMarch });
    expect(r.status).toBe(200);
    expect(r.body.invalid_values).toBe(1);
    expect(r.body.data).toEqual([
      { from: berlinMarch.from, to: berlinMarch.to, value: "3.35", groups: { region: "eu" } },
      { from: berlinMarch.from, to: berlinMarch.to, value: "10.05", groups: { region: "us" } },
    ]);
  });

  it("unique_count, min, max and latest", async () => {
    const one = async (meter: string) =>
      (await usage({ meter, customer: acme, ...berlinMarch })).body.data[0].value;
    expect(await one("users")).toBe("4");
    expect(await one("biggest")).toBe("10");
    expect(await one("smallest")).toBe("0.05");
    expect(await one("last_region")).toBe("us"); // c4 is the newest call
  });

  it("time-weighted sum and average of a gauge, with the level carried into the window", async () => {
    const day = { customer: acme, from: iso(march1), to: iso(march1 + 24 * H) };
    expect((await usage({ meter: "storage", ...day })).body.data[0].value).toBe("360"); // 10×12 + 20×12 GB-hours
    expect((await usage({ meter: "storage_avg", ...day })).body.data[0].value).toBe("15");
    const mid = { customer: acme, from: iso(march1 + 6 * H), to: iso(march1 + 18 * H) };
    expect((await usage({ meter: "storage", ...mid })).body.data[0].value).toBe("180"); // 10 carried in ×6 + 20×6
    const hourly = await usage({
      meter: "storage",
      customer: acme,
      from: iso(march1 + 11 * H),
      to: iso(march1 + 13 * H),
      window: "hour",
    });
    expect(hourly.body.data.map((d: { value: string }) => d.value)).toEqual(["10", "20"]);
  });

  it("peak of a gauge: the highest level held in the window, including the carried-in one", async () => {
    expect(
      (await usage({ meter: "seats", customer: acme, from: iso(march1), to: iso(march1 + 24 * H) })).body
        .data[0].value,
    ).toBe("9");
    expect(
      (await usage({ meter: "seats", customer: acme, from: iso(march1 + 3 * H), to: iso(march1 + 4 * H) }))
        .body.data[0].value,
    ).toBe("3");
  });

  it("agrees with the event debugger on the same events (one number)", async () => {
    const f = { from: "2026-03-01T00:00:00Z", to: "2026-04-01T00:00:00Z" };
    const count = (
      await get(edge, `/v1/events/count?customer=${acme}&type=api_call&from=${f.from}&to=${f.to}`)
    ).body.count;
    const all = await request(`/v1/meters/calls`, { key: readKey });
    expect(all.status).toBe(200);
    // `calls` excludes the failed call: the debugger counts every event.
    const r = await usage({ meter: "calls", customer: acme, ...f });
    expect(Number(r.body.data.reduce((n: number, d: { value: string }) => n + Number(d.value), 0))).toBe(
      count - 1,
    );
  });

  it("answers every customer at once (for the close job), each row naming its customer", async () => {
    const r = await usage({ meter: "tokens", ...berlinMarch });
    expect(r.status).toBe(200);
    expect(r.body.customer).toBeNull();
    const mine = r.body.data.filter(
      (d: { customer: string }) => d.customer === acme || d.customer === globex,
    );
    expect(mine).toEqual([
      { from: berlinMarch.from, to: berlinMarch.to, value: "13.4", customer: acme },
      { from: berlinMarch.from, to: berlinMarch.to, value: "1000", customer: globex },
    ]);
  });

  it("a changed meter gets a new version and applies to history; the old version stays readable", async () => {
    const put = await request("/v1/meters/users", {
      method: "PUT",
      body: JSON.stringify({ event_type: "api_call", aggregation: "unique_count", value_property: "region" }),
    });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ key: "users", outcome: "updated", version: 2 });
    await eventually(
      async () => (await usage({ meter: "users", customer: acme, ...berlinMarch })).body.meter_version === 2,
    );
    expect((await usage({ meter: "users", customer: acme, ...berlinMarch })).body.data[0].value).toBe("2");
    const history = await request("/v1/meters/users/versions", { key: readKey });
    expect(
      history.body.data.map((m: { version: number; value_property: string }) => [
        m.version,
        m.value_property,
      ]),
    ).toEqual([
      [1, "user"],
      [2, "region"],
    ]);
    // Applying the same definition again changes nothing.
    const again = await request("/v1/meters/users", {
      method: "PUT",
      body: JSON.stringify({ event_type: "api_call", aggregation: "unique_count", value_property: "region" }),
    });
    expect(again.body).toMatchObject({ outcome: "unchanged", version: 2 });
  });

  it("pushes new numbers on the live stream within 2 s of ingest", async () => {
    const now = Date.now();
    const range = { meter: "calls", customer: acme, from: iso(now - 3_600_000), to: iso(now + 3_600_000) };
    const res = await edge.app.request(`/v1/usage/stream?${new URLSearchParams(range).toString()}`, {
      headers: { authorization: `Bearer ${readKey}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const events = sseReader(res.body!);
    const first = await events.next("usage");
    expect(first.data[0].value).toBe("0");
    const sentAt = Date.now();
    expect(
      (
        await post(
          edge,
          { id: `live-${guid()}`, type: "api_call", customer: acme, properties: { region: "eu" } },
          ingestKey,
        )
      ).status,
    ).toBe(202);
    const ackedAt = Date.now();
    const next = await events.next("usage");
    const lagMs = Date.now() - ackedAt;
    expect(next.data[0].value).toBe("1");
    expect(lagMs).toBeLessThan(2000);
    expect(ackedAt - sentAt).toBeLessThan(2000);
    await events.close();
  });
});

describe("errors", () => {
  it("names the bad field and the reason", async () => {
    const cases: [Record<string, string>, number, string][] = [
      [{ meter: "nope", customer: acme }, 404, "meter"],
      [{ customer: acme }, 400, "meter"],
      [{ meter: "calls", tz: "Mars/Olympus" }, 400, "tz"],
      [{ meter: "calls", window: "week" }, 400, "window"],
      [{ meter: "calls", from: "yesterday" }, 400, "from"],
      [{ meter: "calls", from: "2026-03-02T00:00:00Z", to: "2026-03-01T00:00:00Z" }, 400, "to"],
      [{ meter: "calls", from: "2024-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z" }, 400, "to"],
      [{ meter: "calls", group_by: "model" }, 400, "group_by"],
      [
        { meter: "calls", from: "2025-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z", window: "minute" },
        400,
        "window",
      ],
    ];
    for (const [params, status, field] of cases) {
      const r = await usage(params);
      expect(r.status, JSON.stringify(params)).toBe(status);
      expect(
        r.body.error.details.errors.map((d: { field: string }) => d.field),
        JSON.stringify(params),
      ).toContain(field);
    }
  });

  it("rejects a bad catalog with the exact path of each bad field, and stores nothing", async () => {
    const bad = `meters:\n  - key: ok_one\n    event_type: x\n    aggregation: count\n  - key: Bad Key\n    event_type: x\n    aggregation: average\n    filters: [{ property: a }]\n`;
    const r = await request("/v1/catalog", { method: "POST", body: bad });
    expect(r.status).toBe(400);
    const fields = r.body.error.details.errors.map((d: { field: string }) => d.field);
    expect(fields).toEqual(
      expect.arrayContaining(["meters[1].key", "meters[1].aggregation", "meters[1].filters[0]"]),
    );
    expect((await request("/v1/meters/ok_one")).status).toBe(404);
    const sumWithoutProperty = await request("/v1/meters/x", {
      method: "PUT",
      body: JSON.stringify({ event_type: "x", aggregation: "sum" }),
    });
    expect(sumWithoutProperty.status).toBe(400);
    expect(sumWithoutProperty.body.error.details.errors[0].field).toBe("value_property");
  });
});

describe("security", () => {
  it("needs a key with the read scope; an ingest-only key is refused", async () => {
    expect((await usage({ meter: "calls" }, "")).status).toBe(401);
    expect((await usage({ meter: "calls" }, "tally_not_a_key")).status).toBe(401);
    expect((await usage({ meter: "calls" }, ingestKey)).status).toBe(403);
    expect((await usage({ meter: "calls", customer: acme }, readKey)).status).toBe(200);
  });

  it("a portal token reads exactly one customer, whatever parameters are tried", async () => {
    const issued = await request("/v1/portal/tokens", {
      method: "POST",
      body: JSON.stringify({ customer: acme, expires_in: 600 }),
    });
    expect(issued.status).toBe(201);
    const token: string = issued.body.token;
    // No customer given: the token's customer.
    const own = await usage({ meter: "tokens", ...berlinMarch }, token);
    expect(own.status).toBe(200);
    expect(own.body.customer).toBe(acme);
    expect(own.body.data.every((d: { customer?: string }) => d.customer === undefined)).toBe(true);
    expect(own.body.data[0].value).toBe("13.4");
    // Another customer, by parameter or by query-string token next to it: refused.
    expect((await usage({ meter: "tokens", customer: globex }, token)).status).toBe(403);
    const viaQuery = await request(
      `/v1/usage?${new URLSearchParams({ meter: "tokens", customer: globex, token }).toString()}`,
      { key: "" },
    );
    expect(viaQuery.status).toBe(403);
    const streamOther = await request(
      `/v1/usage/stream?${new URLSearchParams({ meter: "tokens", customer: globex, token }).toString()}`,
      { key: "" },
    );
    expect(streamOther.status).toBe(403);
    // The token opens nothing but usage.
    expect((await get(edge, `/v1/events?customer=${acme}`, token)).status).toBe(401);
    expect((await get(edge, `/v1/meters`, token)).status).toBe(401);
    expect(
      (
        await request("/v1/portal/tokens", {
          method: "POST",
          key: token,
          body: JSON.stringify({ customer: globex }),
        })
      ).status,
    ).toBe(401);
    // Tampered: the customer swapped inside the payload.
    const [prefix, payload, sig] = token.split(".");
    const forged = Buffer.from(
      JSON.stringify({ c: globex, exp: JSON.parse(Buffer.from(payload!, "base64url").toString()).exp }),
    ).toString("base64url");
    expect((await usage({ meter: "tokens" }, `${prefix}.${forged}.${sig}`)).status).toBe(401);
    // API keys are never taken from the URL.
    expect((await request(`/v1/usage?meter=tokens&token=${ADMIN_KEY}`, { key: "" })).status).toBe(401);
  });

  it("only admins issue portal tokens and change meters", async () => {
    expect(
      (
        await request("/v1/portal/tokens", {
          method: "POST",
          key: readKey,
          body: JSON.stringify({ customer: acme }),
        })
      ).status,
    ).toBe(403);
    expect((await request("/v1/catalog", { method: "POST", key: readKey, body: meters })).status).toBe(403);
    const bad = await request("/v1/portal/tokens", {
      method: "POST",
      body: JSON.stringify({ customer: acme, expires_in: 10 ** 9 }),
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.errors[0].field).toBe("expires_in");
  });
});

/** Reads Server-Sent Events from a response body. */
function sseReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  return {
    async next(event: string, timeoutMs = 10_000): Promise<any> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const sep = buf.indexOf("\n\n");
        if (sep >= 0) {
          const block = buf.slice(0, sep);
          buf = buf.slice(sep + 2);
          const name = /^event: ?(.*)$/m.exec(block)?.[1] ?? "message";
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.replace(/^data: ?/, ""))
            .join("\n");
          if (name === event) return JSON.parse(data);
          continue;
        }
        if (Date.now() > deadline) throw new Error(`no ${event} event within ${timeoutMs} ms`);
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        buf += decoder.decode(value, { stream: true });
      }
    },
    close: () => reader.cancel(),
  };
}
