import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import type { RunningEdge } from "../src/runtime/edge.js";
import { ADMIN_KEY, eventually } from "./helpers.js";

/*
 * Shared pieces of the outbound webhook tests: a real HTTP receiver that records what arrives
 * and answers as each test tells it, and calls of the admin API through the in-process edge.
 */

/** Settings every webhook test uses: plain http to 127.0.0.1, a short retry schedule and timeout. */
export const webhookEnv = {
  TALLY_WEBHOOK_ALLOW_HTTP: "true",
  TALLY_WEBHOOK_RETRY_SCHEDULE: "300ms,600ms,900ms",
  TALLY_WEBHOOK_TIMEOUT_MS: "3000",
  TALLY_WEBHOOK_ACK_WAIT_MS: "2000",
  TALLY_WEBHOOK_SECRET_OVERLAP_MS: "4000",
  TALLY_WEBHOOK_ENDPOINT_CONCURRENCY: "4",
};

export interface Received {
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** How the receiver answers request number `n` (0-based): a status, after `delayMs`. */
export type Answer = (
  n: number,
  r: Received,
) => { status: number; delayMs?: number; headers?: Record<string, string> };

export class Receiver {
  readonly requests: Received[] = [];
  answer: Answer = () => ({ status: 200 });
  private server!: Server;
  url = "";

  static async start(answer?: Answer): Promise<Receiver> {
    const r = new Receiver();
    if (answer) r.answer = answer;
    r.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const got: Received = {
          at: Date.now(),
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        };
        const n = r.requests.length;
        r.requests.push(got);
        const a = r.answer(n, got);
        const reply = () => {
          if (res.destroyed) return;
          res.writeHead(a.status, a.headers ?? {});
          res.end("ok");
        };
        if (a.delayMs) setTimeout(reply, a.delayMs);
        else reply();
      });
    });
    await new Promise<void>((done) => r.server.listen(0, "127.0.0.1", done));
    r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}/hooks`;
    return r;
  }

  /** Requests of one event (by webhook-id). */
  of(webhookId: string): Received[] {
    return this.requests.filter((q) => q.headers["webhook-id"] === webhookId);
  }

  async waitFor(n: number, what = `${n} requests`, timeoutMs = 15_000): Promise<void> {
    await eventually(() => Promise.resolve(this.requests.length >= n), timeoutMs, what);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((done) => this.server.close(() => done()));
  }
}

/** Verifies a received request with the `standardwebhooks` library, as a receiver would; throws if it does not verify. */
export function verify(secret: string, r: Received): { type: string; timestamp: string; data: any } {
  return new Webhook(secret).verify(r.body, {
    "webhook-id": String(r.headers["webhook-id"]),
    "webhook-timestamp": String(r.headers["webhook-timestamp"]),
    "webhook-signature": String(r.headers["webhook-signature"]),
  }) as { type: string; timestamp: string; data: any };
}

/** An admin API call through the in-process edge. */
export async function api(edge: RunningEdge, method: string, path: string, body?: unknown) {
  const res = await edge.app.request(path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Registers an endpoint; resolves with its id and secret. */
export async function createEndpoint(
  edge: RunningEdge,
  url: string,
  eventTypes?: string[],
): Promise<{ id: string; secret: string }> {
  const r = await api(edge, "POST", "/v1/webhook-endpoints", {
    url,
    ...(eventTypes ? { event_types: eventTypes } : {}),
  });
  if (r.status !== 201) throw new Error(`endpoint not created: ${r.status} ${JSON.stringify(r.body)}`);
  return { id: r.body.id as string, secret: r.body.secret as string };
}
