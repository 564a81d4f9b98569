import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createClickHouse, migrate } from "../src/clickhouse/index.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import { ADMIN_KEY, log, testConfig } from "./helpers.js";

// Body size limits over real HTTP (a listening edge): the declared Content-Length is refused
// before the body is read, and a chunked body is counted while it streams.

let edge: RunningEdge;
const max = 4096;

beforeAll(async () => {
  const config = testConfig({
    TALLY_HTTP_PORT: "0",
    TALLY_HTTP_HOST: "127.0.0.1",
    TALLY_MAX_BODY_BYTES: String(max),
  });
  const ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  await ch.close();
  edge = await startEdge(config, log, true);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
});
afterAll(async () => {
  await edge?.stop();
});

function send(path: string, body: string, chunked: boolean): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port: edge.port,
        path,
        method: "POST",
        headers: {
          authorization: `Bearer ${ADMIN_KEY}`,
          "content-type": "application/json",
          ...(chunked ? { "transfer-encoding": "chunked" } : { "content-length": Buffer.byteLength(body) }),
        },
      },
      (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on("error", reject);
    if (chunked) {
      // Several chunks, so the limit has to be enforced while streaming.
      for (let i = 0; i < body.length; i += 1000) req.write(body.slice(i, i + 1000));
      req.end();
    } else {
      req.end(body);
    }
  });
}

const event = (pad: number) =>
  JSON.stringify({ id: "h1", type: "t", customer: "c", properties: { p: "x".repeat(pad) } });

for (const chunked of [false, true]) {
  const how = chunked ? "chunked" : "with Content-Length";
  it(`accepts a body within the limit (${how})`, async () => {
    const r = await send("/v1/events", event(100), chunked);
    expect(r.status).toBe(202);
  });
  it(`refuses a body over the limit with 413 (${how}), on /v1/events and the vendor routes`, async () => {
    const big = event(max);
    for (const path of ["/v1/events", "/api/v1/events/batch"]) {
      const r = await send(path, big, chunked);
      expect(r.status, path).toBe(413);
    }
    expect(JSON.parse((await send("/v1/events", big, chunked)).body).error.code).toBe("payload_too_large");
  });
}

/**
 * Writes a whole request over a raw socket, as curl does, and reads the answer. The body is
 * written in full even when the server answers early, so a server that closes its socket with
 * unread bytes (a TCP reset) loses its own answer.
 */
function rawRequest(head: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const sock = connect(edge.port, "127.0.0.1");
    let text = "";
    sock.on("data", (d: Buffer) => (text += d.toString("latin1")));
    // A write error (EPIPE) is what a client sees when the server stops reading; the answer
    // may still arrive. A reset (ECONNRESET) discards it: the status stays 0.
    sock.on("error", () => {});
    sock.on("close", () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    // Like a client busy uploading (curl, requests), read the answer only after the upload.
    sock.pause();
    sock.write(head);
    sock.write(body, () => sock.end());
    setTimeout(() => sock.resume(), 300);
  });
}

for (const chunked of [false, true]) {
  const how = chunked ? "chunked" : "with Content-Length";
  it(`answers a 6 MiB body sent with Connection: close with its 413 or 401, not a reset (${how}, 3 of 3)`, async () => {
    const data = Buffer.alloc(6 * 1024 * 1024, 0x20);
    const body = chunked
      ? Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n0\r\n\r\n")])
      : data;
    const framing = chunked ? "transfer-encoding: chunked" : `content-length: ${data.length}`;
    for (const [path, auth, status] of [
      ["/v1/events", `authorization: Bearer ${ADMIN_KEY}\r\n`, 413],
      ["/api/v1/events/batch", `authorization: Bearer ${ADMIN_KEY}\r\n`, 413],
      ["/v1/events", "", 401],
    ] as const) {
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const r = await rawRequest(
          `POST ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n` +
            `${auth}${framing}\r\n\r\n`,
          body,
        );
        expect(r.status, `${path} try ${i + 1}`).toBe(status);
        // The rest of the body is read as fast as it comes, not until the 5 s drain bound.
        expect(Date.now() - started).toBeLessThan(3000);
      }
    }
  });
}
