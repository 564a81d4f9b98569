import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { tally as pb } from "../gen/proto.js";
import { createLogger } from "../observability/index.js";
import { Tally, type TallyLogger, type TallyOptions } from "./client.js";
import {
  TallyBufferFullError,
  TallyClosedError,
  TallyRejectedError,
  TallyRetriesExhaustedError,
  TallyValidationError,
  type TallyError,
} from "./errors.js";

interface Received {
  at: number;
  headers: IncomingMessage["headers"];
  ids: string[];
  events: pb.v1.IEvent[];
}

type Reply =
  | { status: number; headers?: Record<string, string>; body?: unknown }
  | "destroy"
  | ((res: ServerResponse) => void);

/** A tiny stand-in for the edge: decodes gzip+protobuf bodies and answers what `reply` says. */
class FakeEdge {
  readonly received: Received[] = [];
  inflight = 0;
  maxInflight = 0;
  reply: (n: number, r: Received) => Reply = () => ({ status: 202, body: { accepted: 1, duplicates: 0 } });
  private server: Server;
  port = 0;

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      this.inflight++;
      this.maxInflight = Math.max(this.maxInflight, this.inflight);
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const raw = Buffer.concat(chunks);
        const body = req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
        const batch = pb.v1.EventBatch.decode(body);
        const r: Received = {
          at: Date.now(),
          headers: req.headers,
          ids: batch.events.map((e) => e.id ?? ""),
          events: batch.events,
        };
        this.received.push(r);
        const reply = this.reply(this.received.length, r);
        res.on("close", () => this.inflight--);
        if (reply === "destroy") {
          req.socket.destroy();
        } else if (typeof reply === "function") {
          reply(res);
        } else {
          res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
          res.end(JSON.stringify(reply.body ?? {}));
        }
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Ids acknowledged (answered 2xx), in order, counting repeats. */
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: Partial<TallyOptions> = {}) {
  const edge = await new FakeEdge().start();
  const errors: TallyError[] = [];
  const client = new Tally({
    url: edge.url,
    apiKey: "key_0123456789abcdef",
    flushIntervalMs: 20,
    onError: (e) => errors.push(e),
    retry: { initialDelayMs: 10, maxDelayMs: 50 },
    ...opts,
  });
  cleanups.push(() => edge.stop());
  cleanups.push(() => client.close());
  return { edge, client, errors };
}

const ev = (i: number) => ({ type: "api_call", customer: "acme", properties: { n: i } });

describe("batching and encoding", () => {
  it("sends gzipped protobuf EventBatches of at most maxBatchSize with the key, ids and track-time times", async () => {
    let clock = 1_700_000_000_000;
    const { edge, client } = await setup({ maxBatchSize: 10, now: () => clock++ });
    const ids = Array.from({ length: 25 }, (_, i) => client.track(ev(i)));
    await client.flush();
    // Batches go out concurrently (up to maxConcurrentRequests): they may arrive in any order.
    const received = [...edge.received].sort((a, b) => ids.indexOf(a.ids[0]!) - ids.indexOf(b.ids[0]!));
    expect(received.map((r) => r.ids.length)).toEqual([10, 10, 5]);
    expect(received.flatMap((r) => r.ids)).toEqual(ids);
    const h = received[0]!.headers;
    expect(h["content-type"]).toBe("application/x-protobuf");
    expect(h["content-encoding"]).toBe("gzip");
    expect(h.authorization).toBe("Bearer key_0123456789abcdef");
    const all = received.flatMap((r) => r.events);
    expect(all.map((e) => Number(e.timeMs))).toEqual(ids.map((_, i) => 1_700_000_000_000 + i));
    expect(all[7]!.properties).toEqual({ n: "7" });
    expect(client.stats()).toMatchObject({ tracked: 25, acknowledged: 25, buffered: 0, failed: 0 });
  });

  it("sends a partial batch after flushIntervalMs without flush()", async () => {
    const { edge, client } = await setup({ maxBatchSize: 100, flushIntervalMs: 30 });
    const t0 = Date.now();
    client.track(ev(1));
    client.track(ev(2));
    while (edge.received.length === 0) await new Promise((r) => setTimeout(r, 5));
    expect(edge.received[0]!.ids).toHaveLength(2);
    expect(edge.received[0]!.at - t0).toBeGreaterThanOrEqual(25);
    expect(edge.received[0]!.at - t0).toBeLessThan(1000);
  });

  it("splits batches by maxBatchBytes", async () => {
    const { edge, client } = await setup({ maxBatchSize: 1000, maxBatchBytes: 10_000 });
    for (let i = 0; i < 10; i++)
      client.track({ type: "t", customer: "c", properties: { blob: "x".repeat(3000) } });
    await client.flush();
    // Batches are sent concurrently, so they may arrive in any order.
    expect(edge.received.map((r) => r.ids.length).sort()).toEqual([1, 3, 3, 3]);
  });

  it("keeps at most maxConcurrentRequests requests in flight", async () => {
    const { edge, client } = await setup({ maxBatchSize: 5, maxConcurrentRequests: 2 });
    edge.reply = () => (res) => setTimeout(() => res.writeHead(202).end("{}"), 20);
    for (let i = 0; i < 50; i++) client.track(ev(i));
    await client.flush();
    expect(edge.received).toHaveLength(10);
    expect(edge.maxInflight).toBe(2);
  });
});

describe("retries", () => {
  it("retries 503 honouring Retry-After in seconds, resending the same ids", async () => {
    const { edge, client, errors } = await setup();
    edge.reply = (n) => (n === 1 ? { status: 503, headers: { "retry-after": "1" } } : { status: 202 });
    const id = client.track(ev(1));
    await client.flush();
    expect(edge.received.map((r) => r.ids)).toEqual([[id], [id]]);
    expect(edge.received[1]!.at - edge.received[0]!.at).toBeGreaterThanOrEqual(950);
    expect(errors).toEqual([]);
    expect(client.stats()).toMatchObject({ acknowledged: 1, retries: 1 });
  });

  it("honours Retry-After as an HTTP date on 429", async () => {
    const { edge, client } = await setup();
    edge.reply = (n) =>
      n === 1
        ? { status: 429, headers: { "retry-after": new Date(Date.now() + 2000).toUTCString() } }
        : { status: 202 };
    client.track(ev(1));
    await client.flush();
    expect(edge.received).toHaveLength(2);
    // HTTP dates have 1 s resolution: the wait is between 1 and 2 s.
    expect(edge.received[1]!.at - edge.received[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it("retries network errors (connection reset) and 5xx with growing backoff", async () => {
    const { edge, client, errors } = await setup({ retry: { initialDelayMs: 40, maxDelayMs: 10_000 } });
    edge.reply = (n) => (n === 1 ? "destroy" : n < 5 ? { status: 500 } : { status: 202 });
    const id = client.track(ev(1));
    await client.flush();
    expect(edge.received.map((r) => r.ids[0])).toEqual([id, id, id, id, id]);
    const gaps = edge.received.slice(1).map((r, i) => r.at - edge.received[i]!.at);
    // Backoff k is between 40*2^(k-1)/2 and 40*2^(k-1).
    expect(gaps[0]).toBeGreaterThanOrEqual(18);
    expect(gaps[3]).toBeGreaterThanOrEqual(155);
    expect(errors).toEqual([]);
  });

  it("reports TallyRetriesExhaustedError with the events after maxAttempts; flush still resolves", async () => {
    const { edge, client, errors } = await setup({
      retry: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 5 },
    });
    edge.reply = () => ({ status: 502 });
    const id = client.track({ id: "keep-me", type: "t", customer: "c", properties: { q: "1.5" } });
    await client.flush();
    expect(edge.received).toHaveLength(3);
    expect(errors).toHaveLength(1);
    const err = errors[0] as TallyRetriesExhaustedError;
    expect(err).toBeInstanceOf(TallyRetriesExhaustedError);
    expect(err.code).toBe("retries_exhausted");
    expect(err.attempts).toBe(3);
    expect(err.status).toBe(502);
    expect(err.events).toEqual([expect.objectContaining({ id, properties: { q: "1.5" } })]);
    expect(client.stats()).toMatchObject({ failed: 1, buffered: 0, acknowledged: 0 });
  });
});

describe("permanent errors", () => {
  it.each([400, 401, 403, 413])("never retries %i and reports the server's error body", async (status) => {
    const { edge, client, errors } = await setup();
    edge.reply = () => ({
      status,
      body: {
        error: {
          code: "invalid_events",
          message: "1 of 2 events are invalid; nothing was accepted",
          details: { invalid: 1, errors: [{ index: 1, field: "time", code: "too_old", message: "too old" }] },
          requestId: "req-42",
        },
      },
    });
    client.track(ev(1));
    client.track({ type: "t", customer: "c", time: 1 });
    await client.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(edge.received).toHaveLength(1);
    expect(errors).toHaveLength(1);
    const err = errors[0] as TallyRejectedError;
    expect(err).toBeInstanceOf(TallyRejectedError);
    expect(err).toMatchObject({
      status,
      serverCode: "invalid_events",
      requestId: "req-42",
      code: "rejected",
    });
    expect(err.details).toMatchObject({ invalid: 1 });
    expect(err.events).toHaveLength(2);
    expect(err.events[1]).toMatchObject({ type: "t", customer: "c", time: 1 });
  });

  it("accepts a pino logger", async () => {
    const logger: TallyLogger = createLogger("sdk-test", "silent");
    const { edge, client } = await setup({ logger });
    edge.reply = (n) => (n === 1 ? { status: 500 } : { status: 202 });
    client.track(ev(1));
    await client.flush();
    expect(client.stats().acknowledged).toBe(1);
  });

  it("logs through the injected logger, and an onError that throws does not break the client", async () => {
    const lines: string[] = [];
    const logger = {
      debug: () => {},
      warn: (_f: object, m: string) => lines.push(`warn ${m}`),
      error: (_f: object, m: string) => lines.push(`error ${m}`),
    };
    const { edge, client } = await setup({
      logger,
      onError: () => {
        throw new Error("boom");
      },
    });
    edge.reply = (n) => (n === 1 ? { status: 500 } : n === 2 ? { status: 400 } : { status: 202 });
    client.track(ev(1));
    await client.flush();
    client.track(ev(2));
    await client.flush();
    expect(lines).toEqual([
      "warn sending usage events failed; retrying",
      "error usage events failed",
      "error onError threw",
    ]);
    expect(client.stats()).toMatchObject({ acknowledged: 1, failed: 1 });
  });
});

describe("bounded memory", () => {
  it("throws TallyBufferFullError when maxBufferedEvents are unacknowledged; trackAsync waits for room", async () => {
    const { edge, client } = await setup({ maxBufferedEvents: 5, maxBatchSize: 5 });
    const held: ServerResponse[] = [];
    edge.reply = () => (res) => held.push(res);
    for (let i = 0; i < 5; i++) client.track(ev(i));
    expect(() => client.track(ev(5))).toThrow(TallyBufferFullError);
    while (held.length === 0) await new Promise((r) => setTimeout(r, 5));
    // Still full while the request is in flight: in-flight events count against the bound.
    expect(() => client.track(ev(5))).toThrow(TallyBufferFullError);
    expect(client.stats()).toMatchObject({ tracked: 5, buffered: 5 });
    let done = false;
    const waiting = client.trackAsync(ev(6)).then((id) => {
      done = true;
      return id;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false);
    held[0]!.writeHead(202).end("{}");
    const id = await waiting;
    edge.reply = () => ({ status: 202 });
    await client.flush();
    expect(edge.received.flatMap((r) => r.ids)).toContain(id);
    expect(client.stats()).toMatchObject({ tracked: 6, acknowledged: 6, buffered: 0 });
  });

  it("refuses invalid events at track() time and buffers nothing", async () => {
    const { edge, client } = await setup();
    expect(() => client.track({ type: "t", customer: "c", properties: { q: 0.1 + 0.2 } })).toThrow(
      TallyValidationError,
    );
    await client.flush();
    expect(edge.received).toHaveLength(0);
    expect(client.stats().tracked).toBe(0);
  });
});

describe("close", () => {
  it("flushes what is buffered, then refuses new events", async () => {
    const { edge, client } = await setup({ flushIntervalMs: 60_000, maxBatchSize: 1000 });
    for (let i = 0; i < 7; i++) client.track(ev(i));
    await client.close();
    expect(edge.received.map((r) => r.ids.length)).toEqual([7]);
    expect(() => client.track(ev(8))).toThrow(TallyClosedError);
    await client.close(); // idempotent
  });
});
