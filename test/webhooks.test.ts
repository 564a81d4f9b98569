import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { startEdge } from "../src/runtime/edge.js";
import { ADMIN_KEY, startTestEdge, testConfig, eventually, log } from "./helpers.js";
import { DAY, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";
import { startDispatcher, type OutboundEvent, type WebhookDispatcher } from "../src/webhooks/index.js";
import { api, createEndpoint, Receiver, verify, webhookEnv } from "./webhooks-setup.js";

/*
 * Outbound webhooks end to end on the suite's real nats-server and clickhouse-server: endpoints
 * through the admin API of an in-process edge, a real close finalizing an invoice, a dispatcher
 * (in-process here; webhooks-crash.test.ts runs the close role's own in a child process), and
 * real HTTP receivers that verify every request with `standardwebhooks`' Webhook.verify.
 * Settings: retries after 300 ms, 600 ms, 900 ms; 3 s timeout; 4 s rotation overlap.
 */
const D = today();
let env: CloseEnv;
let dispatcher: WebhookDispatcher;
const receivers: Receiver[] = [];

async function receiver(answer?: Parameters<typeof Receiver.start>[0]) {
  const r = await Receiver.start(answer);
  receivers.push(r);
  return r;
}

let seq = 0;
/** A test event of a type only these tests' endpoints subscribe to (other tests' events stay out). */
function testEvent(): OutboundEvent {
  return { id: `evt_test_${Date.now()}_${seq++}`, type: "reconciliation.mismatch", data: { n: seq } };
}

beforeAll(async () => {
  env = await startCloseEnv(
    `
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 2400 }
customers:
  - { key: acme, currency: usd, timezone: UTC }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(D - 2 * DAY)}" }
`,
    webhookEnv,
  );
  env.deps.webhooks = env.edge.webhooks.emitter;
  dispatcher = await startDispatcher(env.edge.nc.jetstream(), env.edge.webhooks, env.config, log);
});
afterAll(async () => {
  await dispatcher?.stop();
  await env?.stop();
  for (const r of receivers) await r.stop();
});

describe("endpoints API", () => {
  it("creates an endpoint with a whsec_ secret shown once; listings and reads never show it", async () => {
    const r = await receiver();
    const created = await api(env.edge, "POST", "/v1/webhook-endpoints", {
      url: r.url,
      event_types: ["invoice.paid"],
      description: "books",
    });
    expect(created.status).toBe(201);
    expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/=]{40,}$/);
    expect(Buffer.from(created.body.secret.slice(6), "base64").length).toBeGreaterThanOrEqual(24);
    expect(created.body).toMatchObject({ url: r.url, event_types: ["invoice.paid"], status: "enabled" });
    const one = await api(env.edge, "GET", `/v1/webhook-endpoints/${created.body.id}`);
    const all = await api(env.edge, "GET", "/v1/webhook-endpoints");
    expect(one.status).toBe(200);
    expect(JSON.stringify(one.body)).not.toContain(created.body.secret.slice(6, 20));
    expect(JSON.stringify(all.body)).not.toContain(created.body.secret.slice(6, 20));
    expect(all.body.data.map((e: any) => e.id)).toContain(created.body.id);
    // Default: every event type.
    const every = await api(env.edge, "POST", "/v1/webhook-endpoints", { url: r.url });
    expect(every.body.event_types).toContain("usage.threshold_crossed");
    expect(every.body.event_types).toHaveLength(7);
    expect((await api(env.edge, "DELETE", `/v1/webhook-endpoints/${every.body.id}`)).status).toBe(204);
    expect((await api(env.edge, "GET", `/v1/webhook-endpoints/${every.body.id}`)).status).toBe(404);
    expect((await api(env.edge, "DELETE", `/v1/webhook-endpoints/${created.body.id}`)).status).toBe(204);
  });

  it("refuses bad input with 400 naming the field", async () => {
    const bad = async (body: unknown) => {
      const r = await api(env.edge, "POST", "/v1/webhook-endpoints", body);
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      return (r.body.error.details.errors as { field: string; code: string }[]).map((e) => e.field);
    };
    expect(await bad({ url: "http://127.0.0.1:1/x", event_types: ["invoice.created"] })).toEqual([
      "event_types.0",
    ]);
    expect(await bad({ url: "ftp://example.com/x" })).toEqual(["url"]);
    expect(await bad({ url: "not a url" })).toEqual(["url"]);
    expect(await bad({ url: "https://user:pw@example.com/x" })).toEqual(["url"]);
    expect(await bad({ event_types: ["invoice.paid"] })).toEqual(["url"]);
    expect(await bad({ url: "https://example.com/x", event_types: [] })).toEqual(["event_types"]);
    expect(await bad({ url: "https://example.com/x", secret: "mine" })).toEqual(["secret"]);
    expect(await bad("{")).toEqual(["body"]);
  });

  it("never logs a secret (create, rotate, deliveries), even at trace level", async () => {
    const lines: string[] = [];
    const memLog = pino({ level: "trace" }, { write: (l: string) => lines.push(l) });
    const config = testConfig(webhookEnv);
    const { edge, ch } = await startTestEdge(config);
    await edge.stop();
    const traced = await startEdge(config, memLog, false);
    await traced.keys.put(ADMIN_KEY, "test admin", ["admin"]);
    const d = await startDispatcher(traced.nc.jetstream(), traced.webhooks, config, memLog);
    const r = await receiver();
    try {
      const ep = await createEndpoint(traced, `${r.url}?token=receiver-token-123`, [
        "reconciliation.mismatch",
      ]);
      const rotated = await api(traced, "POST", `/v1/webhook-endpoints/${ep.id}/rotate-secret`);
      await traced.webhooks.emitter.emit(testEvent());
      await r.waitFor(1);
      await api(traced, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`);
      const all = lines.join("");
      expect(all).toContain(ep.id);
      for (const secret of [ep.secret, rotated.body.secret as string]) {
        expect(all).not.toContain(secret.slice(6, 26));
      }
      expect(all).not.toContain("receiver-token-123");
    } finally {
      await d.stop();
      await traced.stop();
      await ch.close();
    }
  });

  it("requires the admin scope", async () => {
    const r = await env.edge.app.request("/v1/webhook-endpoints", { method: "GET" });
    expect(r.status).toBe(401);
    await env.edge.keys.put("tally_test_read_key_0123456789abc", "reader", ["read"]);
    const read = await env.edge.app.request("/v1/webhook-endpoints", {
      headers: { authorization: "Bearer tally_test_read_key_0123456789abc" },
    });
    expect(read.status).toBe(403);
  });

  it("requires https and a public address unless TALLY_WEBHOOK_ALLOW_HTTP", async () => {
    const strict = await startTestEdge(testConfig());
    try {
      const post = (url: string) => api(strict.edge, "POST", "/v1/webhook-endpoints", { url });
      for (const url of [
        "http://example.com/hooks",
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://169.254.169.254/latest",
        "https://10.1.2.3/x",
        "https://[::1]/x",
      ]) {
        const r = await post(url);
        expect(r.status, url).toBe(400);
        expect(r.body.error.details.errors[0].field).toBe("url");
      }
      expect((await post("https://example.com/hooks")).status).toBe(201);
    } finally {
      await strict.edge.stop();
      await strict.ch.close();
    }
  });
});

describe("delivery", () => {
  it("delivers a signed invoice.finalized from the close that verifies with standardwebhooks", async () => {
    const r = await receiver();
    const ep = await createEndpoint(env.edge, r.url, ["invoice.finalized"]);
    const report = await env.closeThrough(D - DAY);
    expect(report.errors).toEqual([]);
    expect(report.finalized).toHaveLength(1);
    const invoice = (await env.deps.invoices.get(report.finalized[0]!))!;
    await r.waitFor(1);
    const got = r.requests[0]!;
    expect(got.headers["webhook-id"]).toBe(`evt_invoice_finalized_${invoice.id}`);
    expect(Number(got.headers["webhook-timestamp"])).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(got.headers["content-type"]).toBe("application/json");
    const payload = verify(ep.secret, got);
    expect(payload.type).toBe("invoice.finalized");
    expect(payload.data).toMatchObject({
      id: invoice.id,
      number: invoice.number,
      total: 2400,
      currency: "USD",
      customer: "acme",
      subscription: "acme-daily",
      period: invoice.period,
    });
    expect(Date.parse(payload.timestamp)).toBeGreaterThan(0);
    // A tampered body or another secret does not verify.
    expect(() => verify(ep.secret, { ...got, body: got.body.replace("2400", "2500") })).toThrow();
    expect(() => verify("whsec_" + Buffer.alloc(32, 7).toString("base64"), got)).toThrow();
    // The log shows it delivered.
    const log = await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`);
    expect(log.body.data).toHaveLength(1);
    expect(log.body.data[0]).toMatchObject({ status: "succeeded", event_type: "invoice.finalized" });
    expect(log.body.data[0].attempts[0].status_code).toBe(200);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("retries a receiver that fails (500) on the schedule until it succeeds; the log shows each attempt", async () => {
    const r = await receiver((n) => ({ status: n < 2 ? 500 : 204 }));
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    await r.waitFor(3);
    const reqs = r.of(ev.id);
    expect(reqs).toHaveLength(3);
    // Same webhook-id and body every time; each attempt signs its own timestamp.
    for (const q of reqs) expect(verify(ep.secret, q).data).toEqual(ev.data);
    expect(new Set(reqs.map((q) => q.body)).size).toBe(1);
    // Waits follow the schedule (300 ms, 600 ms, ±10 % jitter).
    expect(reqs[1]!.at - reqs[0]!.at).toBeGreaterThanOrEqual(260);
    expect(reqs[2]!.at - reqs[1]!.at).toBeGreaterThanOrEqual(530);
    let d: any;
    await eventually(async () => {
      d = (await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0];
      return d?.status === "succeeded";
    });
    expect(d.attempts.map((a: any) => a.status_code)).toEqual([500, 500, 204]);
    expect(d.attempts[0].error).toBe("status 500");
    expect(d.next_attempt_at).toBeNull();
    await new Promise((done) => setTimeout(done, 500));
    expect(r.of(ev.id)).toHaveLength(3);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("gives up after the last scheduled attempt; a 3xx is a failure and is not followed", async () => {
    const r = await receiver(() => ({ status: 302, headers: { location: "http://127.0.0.1:1/elsewhere" } }));
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    let d: any;
    await eventually(async () => {
      d = (await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0];
      return d?.status === "failed";
    });
    // 1 immediate + 3 retries.
    expect(d.attempts.map((a: any) => a.status_code)).toEqual([302, 302, 302, 302]);
    expect(r.of(ev.id)).toHaveLength(4);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("retries a receiver that times out", async () => {
    const r = await receiver((n) => (n === 0 ? { status: 200, delayMs: 7000 } : { status: 200 }));
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    let d: any;
    await eventually(async () => {
      d = (await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0];
      return d?.status === "succeeded";
    }, 15_000);
    expect(d.attempts.map((a: any) => [a.status_code, a.error])).toEqual([
      [null, "timeout"],
      [200, null],
    ]);
    expect(d.attempts[0].duration_ms).toBeGreaterThanOrEqual(2900);
    expect(d.attempts[0].duration_ms).toBeLessThan(6500);
    const reqs = r.of(ev.id);
    expect(reqs[0]!.headers["webhook-id"]).toBe(reqs[1]!.headers["webhook-id"]);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("honours Retry-After on a 429", async () => {
    const r = await receiver((n) =>
      n === 0 ? { status: 429, headers: { "retry-after": "2" } } : { status: 200 },
    );
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    await r.waitFor(2, "the retry", 10_000);
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(1900);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("disables an endpoint that answers 410 Gone; nothing more is delivered to it", async () => {
    const gone = await receiver(() => ({ status: 410 }));
    const ep = await createEndpoint(env.edge, gone.url, ["reconciliation.mismatch"]);
    await env.edge.webhooks.emitter.emit(testEvent());
    await gone.waitFor(1);
    await eventually(async () => {
      const e = await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}`);
      return e.body.status === "disabled";
    });
    const e = await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}`);
    expect(e.body.disabled_reason).toMatch(/410/);
    // No retry of the first event, and later events are not delivered.
    const control = await receiver();
    const c = await createEndpoint(env.edge, control.url, ["reconciliation.mismatch"]);
    const later = testEvent();
    await env.edge.webhooks.emitter.emit(later);
    await control.waitFor(1);
    await new Promise((done) => setTimeout(done, 1200));
    expect(gone.requests).toHaveLength(1);
    const replay = await api(
      env.edge,
      "POST",
      `/v1/webhook-endpoints/${ep.id}/deliveries/${(await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0].id}/replay`,
    );
    expect(replay.status).toBe(400);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${c.id}`);
  });

  it("rotation: both secrets verify during the overlap, only the new one after", async () => {
    const r = await receiver();
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const rotatedAt = Date.now();
    const rotated = await api(env.edge, "POST", `/v1/webhook-endpoints/${ep.id}/rotate-secret`);
    expect(rotated.status).toBe(200);
    expect(Date.parse(rotated.body.previous_secret_expires_at as string)).toBeGreaterThanOrEqual(
      rotatedAt + 4000,
    );
    const fresh = rotated.body.secret as string;
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(ep.secret);
    const during = testEvent();
    await env.edge.webhooks.emitter.emit(during);
    await r.waitFor(1);
    const d = r.of(during.id)[0]!;
    expect(String(d.headers["webhook-signature"]).split(" ")).toHaveLength(2);
    expect(verify(ep.secret, d).data).toEqual(during.data);
    expect(verify(fresh, d).data).toEqual(during.data);
    // After the 4 s overlap, only the new secret signs.
    await new Promise((done) => setTimeout(done, Math.max(0, rotatedAt + 4200 - Date.now())));
    const after = testEvent();
    await env.edge.webhooks.emitter.emit(after);
    await r.waitFor(2);
    const a = r.of(after.id)[0]!;
    expect(String(a.headers["webhook-signature"]).split(" ")).toHaveLength(1);
    expect(verify(fresh, a).data).toEqual(after.data);
    expect(() => verify(ep.secret, a)).toThrow();
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("replays a delivery: a new attempt now with the same webhook-id", async () => {
    const r = await receiver();
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    await r.waitFor(1);
    let d: any;
    await eventually(async () => {
      d = (await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0];
      return d?.status === "succeeded";
    });
    const replay = await api(env.edge, "POST", `/v1/webhook-endpoints/${ep.id}/deliveries/${d.id}/replay`);
    expect(replay.status).toBe(202);
    await r.waitFor(2);
    const [first, again] = r.of(ev.id);
    expect(again!.headers["webhook-id"]).toBe(ev.id);
    expect(again!.body).toBe(first!.body);
    expect(verify(ep.secret, again!).data).toEqual(ev.data);
    await eventually(async () => {
      d = (await api(env.edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries/${d.id}`)).body;
      return d.attempts.length === 2;
    });
    expect(d.attempts.map((a: any) => a.trigger)).toEqual(["schedule", "replay"]);
    const missing = await api(
      env.edge,
      "POST",
      `/v1/webhook-endpoints/${ep.id}/deliveries/dlv_${"0".repeat(24)}/replay`,
    );
    expect(missing.status).toBe(404);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("a slow endpoint does not delay deliveries to another", async () => {
    const slow = await receiver(() => ({ status: 200, delayMs: 1000 }));
    const fast = await receiver();
    const s = await createEndpoint(env.edge, slow.url, ["reconciliation.mismatch"]);
    const f = await createEndpoint(env.edge, fast.url, ["reconciliation.mismatch"]);
    const events = Array.from({ length: 40 }, () => testEvent());
    const t0 = Date.now();
    await Promise.all(events.map((e) => env.edge.webhooks.emitter.emit(e)));
    await fast.waitFor(40, "40 fast deliveries", 10_000);
    const fastDone = Date.now() - t0;
    // 40 events to the slow endpoint at 4 at a time x 1 s take at least 10 s; the fast one is not behind them.
    expect(fastDone).toBeLessThan(5000);
    expect(slow.requests.length).toBeLessThan(20);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${s.id}`);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${f.id}`);
  });

  it("an event emitted twice (same id) is delivered once", async () => {
    const r = await receiver();
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const ev = testEvent();
    await env.edge.webhooks.emitter.emit(ev);
    await env.edge.webhooks.emitter.emit(ev);
    await r.waitFor(1);
    await new Promise((done) => setTimeout(done, 800));
    expect(r.of(ev.id)).toHaveLength(1);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });

  it("batched events (the close's emitMany) are delivered once each, also when one is raised again in another batch", async () => {
    const r = await receiver();
    const ep = await createEndpoint(env.edge, r.url, ["reconciliation.mismatch"]);
    const [a, b, c] = [testEvent(), testEvent(), testEvent()];
    await env.edge.webhooks.emitter.emitMany([a, b]);
    await env.edge.webhooks.emitter.emitMany([b, c]);
    await env.edge.webhooks.emitter.emit(a);
    await r.waitFor(3);
    await new Promise((done) => setTimeout(done, 800));
    expect(r.requests.map((q) => q.headers["webhook-id"]).sort()).toEqual([a.id, b.id, c.id].sort());
    for (const q of r.requests) verify(ep.secret, q);
    await api(env.edge, "DELETE", `/v1/webhook-endpoints/${ep.id}`);
  });
});
