import { createHash, randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { OpenMeter } from "@openmeter/sdk";
import { Client as LagoClient } from "lago-javascript-client";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClickHouse, ident, migrate, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  ADMIN_KEY,
  distinctCount,
  eventually,
  get,
  log,
  startTestSink,
  testConfig,
  applyCatalog,
} from "./helpers.js";

/**
 * Drop-in compatibility: the vendors' own client packages, pointed at a real edge listening
 * on a loopback port, with a Tally ingest key as their API key.
 */

const INGEST_KEY = `tally_ingest_${randomBytes(12).toString("hex")}`;
const READ_KEY = `tally_read_${randomBytes(12).toString("hex")}`;

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let db: string;
let base: string;

beforeAll(async () => {
  config = testConfig({ TALLY_HTTP_PORT: "0", TALLY_HTTP_HOST: "127.0.0.1" });
  db = config.clickhouse.database;
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, db);
  edge = await startEdge(config, log, true);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
  await edge.keys.put(INGEST_KEY, "compat ingest", ["ingest"]);
  await edge.keys.put(READ_KEY, "compat read", ["read"]);
  sink = await startTestSink(config);
  base = `http://127.0.0.1:${edge.port}`;
  const applied = await applyCatalog(edge, meters);
  expect(applied.status).toBe(200);
});

/** Meters the idempotency and property-key tests count through (the usage API, as invoices do). */
const meters = `
meters:
  - key: om_calls
    event_type: om_dedup
    aggregation: count
  - key: stream_value
    event_type: stream_retry
    aggregation: sum
    value_property: value
  - key: v1_calls
    event_type: v1_novalue
    aggregation: count
  - key: reserved_sum
    event_type: reserved
    aggregation: sum
    value_property: prototype
`;

/** A meter's value for one customer over the last hour, through \`GET /v1/usage\`. */
async function usageOf(meter: string, customer: string): Promise<number> {
  const q = new URLSearchParams({
    meter,
    customer,
    from: String(Date.now() - 3_600_000),
    to: String(Date.now() + 600_000),
  });
  const r = await get(edge, `/v1/usage?${q.toString()}`);
  expect(r.status).toBe(200);
  return Number(r.body.data[0]?.value ?? 0);
}

/** Waits until the usage API shows \`n\`, then checks a late copy does not raise it. */
async function expectUsage(meter: string, customer: string, n: number) {
  await eventually(
    async () => (await usageOf(meter, customer)) >= n,
    30_000,
    `${meter} = ${n} for ${customer}`,
  );
  await new Promise((r) => setTimeout(r, 500));
  expect(await usageOf(meter, customer)).toBe(n);
}
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const countFor = async (customer: string) =>
  (await get(edge, `/v1/events/count?customer=${encodeURIComponent(customer)}`)).body.count as number;

const listFor = async (customer: string) =>
  (await get(edge, `/v1/events?customer=${encodeURIComponent(customer)}`)).body.data as any[];

/** Waits until `customer` has `n` events, then checks ClickHouse holds exactly n distinct ids. */
async function expectCounted(customer: string, n: number) {
  await eventually(async () => (await countFor(customer)) >= n, 30_000, `${n} events for ${customer}`);
  // Let a late duplicate land before asserting it was not counted.
  await new Promise((r) => setTimeout(r, 300));
  expect(await countFor(customer)).toBe(n);
  expect(await distinctCount(ch, db, `customer = '${customer}'`)).toBe(n);
}

const uid = () => randomBytes(6).toString("hex");
const nowSec = () => Math.floor(Date.now() / 1000);

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err: unknown) {
    return err;
  }
  throw new Error("expected the call to fail");
}

const stripeAt = (key: string) =>
  new Stripe(key, { host: "127.0.0.1", port: edge.port, protocol: "http", maxNetworkRetries: 0 });

describe("OpenMeter (@openmeter/sdk)", () => {
  const om = () => new OpenMeter({ baseUrl: base, token: INGEST_KEY });

  it("ingests a CloudEvent and a batch, mapping subject/type/data/source, counted once per id", async () => {
    const customer = `om-${uid()}`;
    const time = new Date(Date.now() - 60_000);
    const single = { id: `om-1-${customer}`, source: "billing-svc", type: "prompt", subject: customer, time };
    await expect(
      om().events.ingest({ ...single, data: { tokens: 1234, model: "gpt4" } }),
    ).resolves.toBeUndefined();
    // The same id again (another time, another batch) is not counted twice.
    await om().events.ingest({ ...single, time: new Date(), data: { tokens: 1 } });
    await om().events.ingest([
      {
        id: `om-2-${customer}`,
        source: "billing-svc",
        type: "prompt",
        subject: customer,
        data: { tokens: "0.5" },
      },
      { id: `om-3-${customer}`, type: "prompt", subject: customer, data: {} }, // SDK fills source
    ]);
    await expectCounted(customer, 3);
    // Stored under the id derived from (source, id): docs/compat.md.
    const first = (await listFor(customer)).find(
      (e) => e.id === `${"billing-svc".length}:billing-svc:om-1-${customer}`,
    );
    expect(first).toMatchObject({
      type: "prompt",
      customer,
      source: "billing-svc",
      time: time.toISOString(),
      properties: { tokens: "1234", model: "gpt4" },
    });
  });

  it("accepts plain application/json (one event or an array) and gzip", async () => {
    const customer = `omjson-${uid()}`;
    const ev = (i: number) => ({
      specversion: "1.0",
      id: `j${i}`,
      source: "s",
      type: "t",
      subject: customer,
    });
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${base}/api/v1/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/json", ...headers },
        body: body instanceof Uint8Array ? body : JSON.stringify(body),
      });
    expect((await post(ev(1))).status).toBe(204);
    expect((await post([ev(2), ev(3)])).status).toBe(204);
    expect((await post(gzipSync(JSON.stringify(ev(4))), { "content-encoding": "gzip" })).status).toBe(204);
    await expectCounted(customer, 4);
  });

  it("answers invalid events with problem+json naming the CloudEvents field; nothing is stored", async () => {
    const customer = `omerr-${uid()}`;
    const err = await rejection(
      om().events.ingest([
        { id: "ok-1", type: "t", subject: customer, data: {} },
        { id: "bad-1", type: "bad type!", subject: customer, data: { n: [1] } },
      ]),
    );
    expect(err.name).toBe("HttpError");
    expect(err.statusCode).toBe(400);
    expect(err.problem).toMatchObject({ type: "about:blank", title: "Bad Request", status: 400 });
    expect(err.problem.detail).toContain("type");
    expect(err.problem.errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ index: 1, field: "type", code: "invalid_format" }),
        expect.objectContaining({ index: 1, field: "data.n", code: "invalid_type" }),
      ]),
    );
    const noSubject = await rejection(om().events.ingest({ id: "x", type: "t" } as any));
    expect(noSubject.problem.errors[0]).toMatchObject({ field: "subject", code: "required" });
    const res = await fetch(`${base}/api/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/cloudevents+json" },
      body: JSON.stringify({ id: "nospec", source: "s", type: "t", subject: customer }),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(((await res.json()) as any).errors[0]).toMatchObject({ field: "specversion", code: "required" });
    await new Promise((r) => setTimeout(r, 500));
    expect(await countFor(customer)).toBe(0);
  });

  it("rejects unknown keys (401) and keys without the ingest scope (403) as problem+json", async () => {
    const bad = await rejection(
      new OpenMeter({ baseUrl: base, token: "nope" }).events.ingest({ type: "t", subject: "x", data: {} }),
    );
    expect(bad.statusCode).toBe(401);
    expect(bad.problem).toMatchObject({ status: 401, title: "Unauthorized" });
    const ro = await rejection(
      new OpenMeter({ baseUrl: base, token: READ_KEY }).events.ingest({ type: "t", subject: "x", data: {} }),
    );
    expect(ro.statusCode).toBe(403);
    expect(ro.problem.status).toBe(403);
  });
});

describe("Stripe meter events (stripe SDK)", () => {
  it("v1: creates meter events and answers Stripe's object; the same identifier counts once", async () => {
    const customer = `cus_${uid()}`;
    const ts = nowSec() - 120;
    const params = {
      event_name: "ai_search_api",
      identifier: `idem-${customer}`,
      timestamp: ts,
      payload: { stripe_customer_id: customer, value: "25" },
    };
    const ev = await stripeAt(INGEST_KEY).billing.meterEvents.create(params);
    expect(ev).toMatchObject({
      object: "billing.meter_event",
      event_name: "ai_search_api",
      identifier: `idem-${customer}`,
      livemode: false,
      payload: { stripe_customer_id: customer, value: "25" },
      timestamp: ts,
    });
    expect(typeof ev.created).toBe("number");
    await stripeAt(INGEST_KEY).billing.meterEvents.create({ ...params, timestamp: ts + 1 });
    await stripeAt(INGEST_KEY).billing.meterEvents.create({
      event_name: "ai_search_api",
      payload: { stripe_customer_id: customer, value: "2.5" },
    });
    await expectCounted(customer, 2);
    const stored = (await listFor(customer)).find((e) => e.id === `idem-${customer}`);
    expect(stored).toMatchObject({
      type: "ai_search_api",
      source: "stripe",
      time: new Date(ts * 1000).toISOString(),
      properties: { value: "25" },
    });
  });

  it("v1: errors are Stripe errors naming the param", async () => {
    const s = stripeAt(INGEST_KEY);
    const missing = await rejection(
      s.billing.meterEvents.create({ event_name: "api", payload: { value: "1" } }),
    );
    expect(missing).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(missing).toMatchObject({
      statusCode: 400,
      type: "StripeInvalidRequestError",
      rawType: "invalid_request_error",
      param: "payload[stripe_customer_id]",
      code: "parameter_missing",
    });
    const old = await rejection(
      s.billing.meterEvents.create({
        event_name: "api",
        timestamp: nowSec() - 40 * 86_400,
        payload: { stripe_customer_id: "cus_x", value: "1" },
      }),
    );
    expect(old).toMatchObject({ statusCode: 400, param: "timestamp", code: "too_old" });
    const notNumber = await rejection(
      s.billing.meterEvents.create({
        event_name: "api",
        payload: { stripe_customer_id: "cus_x", value: "lots" },
      }),
    );
    expect(notNumber).toMatchObject({ statusCode: 400, param: "payload[value]" });
    const unknown = await rejection(
      s.billing.meterEvents.create({
        event_name: "api",
        payload: { stripe_customer_id: "c" },
        foo: "1",
      } as any),
    );
    expect(unknown).toMatchObject({ statusCode: 400, param: "foo", code: "parameter_unknown" });
    const unauth = await rejection(
      stripeAt("sk_test_nope").billing.meterEvents.create({
        event_name: "api",
        payload: { stripe_customer_id: "c" },
      }),
    );
    expect(unauth).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(unauth.statusCode).toBe(401);
    const forbidden = await rejection(
      stripeAt(READ_KEY).billing.meterEvents.create({
        event_name: "api",
        payload: { stripe_customer_id: "c" },
      }),
    );
    expect(forbidden).toBeInstanceOf(Stripe.errors.StripePermissionError);
  });

  it("v2: a session token streams meter events; the same identifier counts once", async () => {
    const customer = `cus_${uid()}`;
    const session = await stripeAt(INGEST_KEY).v2.billing.meterEventSession.create();
    expect(session).toMatchObject({ object: "v2.billing.meter_event_session", livemode: false });
    expect(Date.parse(session.expires_at) - Date.parse(session.created)).toBe(15 * 60 * 1000);
    const stream = stripeAt(session.authentication_token).v2.billing.meterEventStream;
    const ev = (id: string, value: string) => ({
      event_name: "tokens",
      identifier: id,
      timestamp: new Date(Date.now() - 5_000).toISOString(),
      payload: { stripe_customer_id: customer, value },
    });
    await stream.create({ events: [ev(`${customer}-a`, "10"), ev(`${customer}-b`, "20")] });
    await stream.create({ events: [ev(`${customer}-b`, "20"), ev(`${customer}-c`, "0.25")] });
    await expectCounted(customer, 3);
    const c = (await listFor(customer)).find((e) => e.id === `${customer}-c`);
    expect(c).toMatchObject({ type: "tokens", properties: { value: "0.25" }, source: "stripe" });

    // The session token is not an API key anywhere else.
    const res = await fetch(`${base}/v1/events`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${session.authentication_token}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ id: "x", type: "t", customer }),
    });
    expect(res.status).toBe(403);
  });

  it("v2: invalid events, expired sessions and bad tokens are refused in Stripe's shape", async () => {
    const session = await stripeAt(INGEST_KEY).v2.billing.meterEventSession.create();
    const stream = stripeAt(session.authentication_token).v2.billing.meterEventStream;
    const invalid = await rejection(
      stream.create({
        events: [
          { event_name: "tokens", payload: { stripe_customer_id: "cus_ok", value: "1" } },
          { event_name: "tokens", payload: { value: "1" } },
        ],
      }),
    );
    expect(invalid).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(invalid).toMatchObject({ statusCode: 400, param: "events[1].payload.stripe_customer_id" });

    const parent = edge.keys.list().find((r) => r.name === "compat ingest")!;
    const expiredToken = `tally_mes_${uid()}`;
    const expiredAt = (Date.now() - 1000).toString(36);
    await edge.keys.put(expiredToken, "expired session", [], `mes_${expiredAt}_abcdef_${parent.id}`);
    const expired = await rejection(
      stripeAt(expiredToken).v2.billing.meterEventStream.create({
        events: [{ event_name: "t", payload: { stripe_customer_id: "c", value: "1" } }],
      }),
    );
    expect(expired).toBeInstanceOf(Stripe.errors.TemporarySessionExpiredError);
    expect(expired.statusCode).toBe(401);

    const unknown = await rejection(
      stripeAt("ek_nope").v2.billing.meterEventStream.create({
        events: [{ event_name: "t", payload: { stripe_customer_id: "c", value: "1" } }],
      }),
    );
    expect(unknown.statusCode).toBe(401);
    const noScope = await rejection(stripeAt(READ_KEY).v2.billing.meterEventSession.create());
    expect(noScope.statusCode).toBe(403);

    // Revoking the key that created a session ends the session.
    const tempKey = `tally_tmp_${uid()}`;
    const temp = await edge.keys.put(tempKey, "temp ingest", ["ingest"]);
    const s2 = await stripeAt(tempKey).v2.billing.meterEventSession.create();
    const send = () =>
      stripeAt(s2.authentication_token).v2.billing.meterEventStream.create({
        events: [{ event_name: "t", payload: { stripe_customer_id: `cus_${uid()}`, value: "1" } }],
      });
    await expect(send()).resolves.toBeDefined();
    await edge.keys.revoke(temp.id);
    expect((await rejection(send())).statusCode).toBe(401);
  });
});

describe("Lago (lago-javascript-client)", () => {
  const lago = (key = INGEST_KEY) => LagoClient(key, { baseUrl: `${base}/api/v1` });

  it("creates events (float and string timestamps) and batches; the same transaction_id counts once", async () => {
    const sub = `sub_${uid()}`;
    const ts = nowSec() - 300;
    const res = await lago().events.createEvent({
      event: {
        transaction_id: `${sub}-1`,
        external_subscription_id: sub,
        code: "storage",
        timestamp: ts + 0.123,
        properties: { gb: 10, region: "eu" },
      },
    });
    expect(res.status).toBe(200);
    expect(res.data.event).toMatchObject({
      transaction_id: `${sub}-1`,
      external_subscription_id: sub,
      code: "storage",
      lago_customer_id: null,
      timestamp: new Date(ts * 1000 + 123).toISOString(),
      properties: { gb: 10, region: "eu" },
    });
    // A retry of the same transaction_id, even with another timestamp, is not counted again.
    await lago().events.createEvent({
      event: { transaction_id: `${sub}-1`, external_subscription_id: sub, code: "storage", timestamp: ts },
    });
    const batch = await lago().events.createBatchEvents({
      events: [
        { transaction_id: `${sub}-2`, external_subscription_id: sub, code: "storage", timestamp: `${ts}.5` },
        { transaction_id: `${sub}-3`, external_subscription_id: sub, code: "api_calls" },
      ],
    });
    expect(batch.status).toBe(200);
    expect(batch.data.events.map((e) => e.transaction_id)).toEqual([`${sub}-2`, `${sub}-3`]);
    await expectCounted(sub, 3);
    const events = await listFor(sub);
    expect(events.find((e) => e.id === `${sub}-1`)).toMatchObject({
      type: "storage",
      source: "lago",
      time: new Date(ts * 1000 + 123).toISOString(),
      properties: { gb: "10", region: "eu" },
    });
    expect(events.find((e) => e.id === `${sub}-2`).time).toBe(new Date(ts * 1000 + 500).toISOString());
  });

  it("accepts external_customer_id when there is no subscription id", async () => {
    const cust = `cust_${uid()}`;
    const body = JSON.stringify({
      event: { transaction_id: `${cust}-1`, external_customer_id: cust, code: "seats" },
    });
    const res = await fetch(`${base}/api/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/json" },
      body,
    });
    expect(res.status).toBe(200);
    await expectCounted(cust, 1);
  });

  it("answers validation problems with 422 validation_errors keyed by field (and index in batches)", async () => {
    const sub = `suberr_${uid()}`;
    const err = await rejection(
      lago().events.createEvent({
        event: { transaction_id: `${sub}-1`, external_subscription_id: sub, timestamp: "yesterday" } as any,
      }),
    );
    expect(err.status).toBe(422);
    expect(err.error).toMatchObject({
      status: 422,
      error: "Unprocessable Entity",
      code: "validation_errors",
      error_details: { code: ["value_is_mandatory"], timestamp: ["invalid_format"] },
    });
    const berr = await rejection(
      lago().events.createBatchEvents({
        events: [
          { transaction_id: `${sub}-2`, external_subscription_id: sub, code: "ok" },
          { transaction_id: `${sub}-3`, code: "ok" } as any,
        ],
      }),
    );
    expect(berr.status).toBe(422);
    expect(berr.error.error_details).toEqual({ "1": { external_customer_id: ["value_is_mandatory"] } });
    await new Promise((r) => setTimeout(r, 500));
    expect(await countFor(sub)).toBe(0);
  });

  it("refuses unknown keys (401) and keys without ingest (403) in Lago's shape", async () => {
    const ev = { event: { transaction_id: "t", external_subscription_id: "s", code: "c" } };
    const unauth = await rejection(lago("nope").events.createEvent(ev));
    expect(unauth.status).toBe(401);
    expect(unauth.error).toMatchObject({ status: 401, error: "Unauthorized" });
    const forbidden = await rejection(lago(READ_KEY).events.createBatchEvents({ events: [ev.event] }));
    expect(forbidden.status).toBe(403);
    expect(forbidden.error).toMatchObject({ status: 403, error: "Forbidden" });
  });
});

describe("idempotency per route (counted through the usage API)", () => {
  it("OpenMeter: the same id from two sources counts twice; the same (source, id) once", async () => {
    const customer = `omidem-${uid()}`;
    const om = new OpenMeter({ baseUrl: base, token: INGEST_KEY });
    const ev = (source: string, id: string) => ({
      id,
      source,
      type: "om_dedup",
      subject: customer,
      data: {},
    });
    const longSource = `urn:${"s".repeat(196)}`;
    const longId = `id-${"i".repeat(97)}`;
    await om.events.ingest([ev("svc-a", "1"), ev("svc-b", "1")]);
    // Retries, one per request and one inside a batch of its own.
    await om.events.ingest(ev("svc-a", "1"));
    await om.events.ingest([ev(longSource, longId), ev("svc-b", "1")]);
    await om.events.ingest(ev(longSource, longId));
    await expectUsage("om_calls", customer, 3);
    // The stored ids follow the rule of docs/compat.md.
    const hashed = `sha256:${createHash("sha256").update(`${longSource.length}:${longSource}:${longId}`).digest("hex")}`;
    expect((await listFor(customer)).map((e) => e.id).sort()).toEqual(
      ["5:svc-a:1", "5:svc-b:1", hashed].sort(),
    );
  });

  it("Stripe v2: a retried request without identifiers counts once (with or without Idempotency-Key)", async () => {
    const customer = `cus_${uid()}`;
    const session = await stripeAt(INGEST_KEY).v2.billing.meterEventSession.create();
    const body = JSON.stringify({
      events: [
        { event_name: "stream_retry", payload: { stripe_customer_id: customer, value: "2" } },
        { event_name: "stream_retry", payload: { stripe_customer_id: customer, value: "3" } },
      ],
    });
    const send = (headers: Record<string, string> = {}) =>
      fetch(`${base}/v2/billing/meter_event_stream`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${session.authentication_token}`,
          "content-type": "application/json",
          ...headers,
        },
        body,
      });
    expect((await send()).status).toBe(200);
    expect((await send()).status).toBe(200); // the client's retry: same bytes
    expect((await send({ "idempotency-key": "k-1" })).status).toBe(200);
    expect((await send({ "idempotency-key": "k-1" })).status).toBe(200); // the SDK's retry
    await expectUsage("stream_value", customer, 10);
    // Two calls of the SDK are two requests (each its own Idempotency-Key), as at Stripe.
    const stream = stripeAt(session.authentication_token).v2.billing.meterEventStream;
    const events = [{ event_name: "stream_retry", payload: { stripe_customer_id: customer, value: "1" } }];
    await stream.create({ events });
    await stream.create({ events });
    await expectUsage("stream_value", customer, 12);
  });

  it("Stripe v1: a meter event without payload[value] is refused with parameter_missing and stores nothing", async () => {
    const customer = `cus_${uid()}`;
    const s = stripeAt(INGEST_KEY);
    const err = await rejection(
      s.billing.meterEvents.create({
        event_name: "v1_novalue",
        identifier: `${customer}-novalue`,
        payload: { stripe_customer_id: customer },
      }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err).toMatchObject({
      statusCode: 400,
      code: "parameter_missing",
      param: "payload[value]",
      message: "Missing required param: payload[value].",
    });
    await s.billing.meterEvents.create({
      event_name: "v1_novalue",
      identifier: `${customer}-ok`,
      payload: { stripe_customer_id: customer, value: "1" },
    });
    await expectUsage("v1_calls", customer, 1);
    expect((await listFor(customer)).map((e) => e.id)).toEqual([`${customer}-ok`]);
  });
});

describe("authentication before the body", () => {
  // Not gzip at all: a route that inflated before authenticating would answer 400 (bad gzip).
  const notGzip = randomBytes(512 * 1024);
  // A real bomb: ~5 KB that inflate past the body limit (413 if inflated before authenticating).
  const bomb = gzipSync(Buffer.alloc(6 * 1024 * 1024, 0x20));

  for (const [path, contentType] of [
    ["/api/v1/events", "application/json"],
    ["/api/v1/events", "application/cloudevents+json"],
    ["/api/v1/events/batch", "application/json"],
    ["/v1/billing/meter_events", "application/x-www-form-urlencoded"],
    ["/v2/billing/meter_event_stream", "application/json"],
    ["/v1/events", "application/json"],
  ] as const) {
    it(`${path} (${contentType}) answers an anonymous gzip body 401 without inflating it`, async () => {
      for (const body of [notGzip, bomb]) {
        for (const auth of [{}, { authorization: "Bearer tally_nope" }] as Record<string, string>[]) {
          const res = await fetch(`${base}${path}`, {
            method: "POST",
            headers: { "content-type": contentType, "content-encoding": "gzip", ...auth },
            body,
          });
          expect(res.status, `${path} ${body.length} bytes`).toBe(401);
          await res.arrayBuffer();
        }
      }
    });
  }

  it("/api/v1/events: a 401 to plain JSON reads as OpenMeter's problem and as Lago's error", async () => {
    const res = await fetch(`${base}/api/v1/events`, {
      method: "POST",
      headers: { authorization: "Bearer nope", "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({
      type: "about:blank",
      title: "Unauthorized",
      status: 401,
      error: "Unauthorized",
      code: "unauthorized",
    });
  });
});

describe("property keys __proto__, constructor, prototype", () => {
  it("constructor and prototype round-trip through native, OpenMeter data, Stripe payload and the debugger", async () => {
    const customer = `cus_${uid()}`;
    const native = await fetch(`${base}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({
        id: `${customer}-native`,
        type: "reserved",
        customer,
        properties: { constructor: "c1", prototype: "1" },
      }),
    });
    expect(native.status).toBe(202);
    await new OpenMeter({ baseUrl: base, token: INGEST_KEY }).events.ingest({
      id: `${customer}-om`,
      source: "s",
      type: "reserved",
      subject: customer,
      data: { constructor: "c2", prototype: "2" },
    });
    await stripeAt(INGEST_KEY).billing.meterEvents.create({
      event_name: "reserved",
      identifier: `${customer}-stripe`,
      payload: { stripe_customer_id: customer, value: "0", constructor: "c3", prototype: "3" },
    });
    // A meter on `prototype` bills what the debugger shows.
    await expectUsage("reserved_sum", customer, 6);
    const byId = new Map((await listFor(customer)).map((e) => [e.id, e.properties]));
    expect(byId.get(`${customer}-native`)).toEqual({ constructor: "c1", prototype: "1" });
    expect(byId.get(`1:s:${customer}-om`)).toEqual({ constructor: "c2", prototype: "2" });
    expect(byId.get(`${customer}-stripe`)).toEqual({ value: "0", constructor: "c3", prototype: "3" });
  });

  it("the debugger shows a stored __proto__ property", async () => {
    // Written straight to ClickHouse: such rows exist from before ingest refused the key.
    const customer = `proto-${uid()}`;
    await ch.insert({
      table: `${ident(db)}.events`,
      format: "JSONEachRow",
      values: [
        {
          customer,
          type: "t",
          ts: Date.now() - 1000,
          id: `${customer}-1`,
          received: Date.now(),
          source: "",
          prop_keys: ["__proto__", "constructor", "a"],
          prop_values: ["x", "y", "z"],
        },
      ],
    });
    const [ev] = await listFor(customer);
    expect(Object.hasOwn(ev.properties, "__proto__")).toBe(true);
    expect(ev.properties).toEqual(JSON.parse('{"__proto__":"x","constructor":"y","a":"z"}'));
  });

  it("__proto__ is refused with a field error naming it on every route, never dropped", async () => {
    const customer = `cus_${uid()}`;
    const stripe = await rejection(
      stripeAt(INGEST_KEY).billing.meterEvents.create({
        event_name: "reserved",
        payload: { stripe_customer_id: customer, value: "1", ["__proto__"]: "5" },
      }),
    );
    expect(stripe).toMatchObject({ statusCode: 400, param: "payload[__proto__]" });
    const native = await fetch(`${base}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/json" },
      body: `{"id":"${customer}-n","type":"reserved","customer":"${customer}","properties":{"__proto__":"5"}}`,
    });
    expect(native.status).toBe(400);
    expect(((await native.json()) as any).error.details.errors[0]).toMatchObject({
      index: 0,
      field: "properties.__proto__",
      code: "reserved_key",
    });
    const om = await fetch(`${base}/api/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${INGEST_KEY}`, "content-type": "application/cloudevents+json" },
      body: `{"specversion":"1.0","id":"o","source":"s","type":"reserved","subject":"${customer}","data":{"__proto__":"5"}}`,
    });
    expect(om.status).toBe(400);
    expect(((await om.json()) as any).errors[0]).toMatchObject({
      field: "data.__proto__",
      code: "reserved_key",
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(await countFor(customer)).toBe(0);
  });
});
