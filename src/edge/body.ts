import type { IncomingMessage } from "node:http";
import type { HttpBindings } from "@hono/node-server";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ApiError } from "../lib/errors.js";
import type { EdgeEnv } from "./context.js";

const noop = () => Promise.resolve();

function tooLarge(maxBytes: number): ApiError {
  return new ApiError("payload_too_large", `request body exceeds ${maxBytes} bytes`);
}

/**
 * Reads a request body of at most `maxBytes`, refusing larger ones with 413 before reading them.
 *
 * With a Content-Length (every SDK and most clients send one) the header decides, and the body is
 * read on @hono/node-server's fast path straight from the socket; Node's HTTP parser never
 * delivers more bytes than the header announced. Only chunked bodies go through hono's
 * `bodyLimit`, which counts bytes while streaming.
 * NOTE: hono's `bodyLimit` touches `request.body`, which makes @hono/node-server build a full
 * web `Request` and `ReadableStream` for every request: it cost ~16 % of the edge's CPU on
 * single-event ingest, hence this split.
 */
export async function readBodyLimited(c: Context<EdgeEnv>, maxBytes: number): Promise<Uint8Array> {
  const declared = c.req.header("content-length");
  if (declared !== undefined && /^\d{1,15}$/.test(declared)) {
    if (Number(declared) > maxBytes) throw tooLarge(maxBytes);
  } else {
    const limit: MiddlewareHandler = bodyLimit({
      maxSize: maxBytes,
      onError: () => {
        throw tooLarge(maxBytes);
      },
    });
    await limit(c as Context<EdgeEnv, string>, noop);
  }
  const body = new Uint8Array(await c.req.arrayBuffer());
  if (body.length > maxBytes) throw tooLarge(maxBytes);
  return body;
}

/** Longest a request's unread body is read and discarded before its connection closes. */
const drainMs = 5_000;

/** True when Node's HTTP server closes the connection after this request's answer. */
function closesAfter(incoming: IncomingMessage): boolean {
  const conn = (incoming.headers.connection ?? "").toLowerCase();
  if (/\bclose\b/.test(conn)) return true;
  return incoming.httpVersion === "1.0" && !/\bkeep-alive\b/.test(conn);
}

/**
 * Answers early refusals (401, 413, ...) of requests whose connection closes after the answer
 * only once their body has been read and discarded (at most {@link drainMs}).
 *
 * Why: with `Connection: close`, Node's HTTP server destroys the socket as soon as the answer is
 * written; a socket closed with unread bytes makes the kernel send a TCP reset, and a client
 * still uploading (curl, requests) loses the answer it had not read yet: a 6 MiB body got a
 * reset instead of its 413 in 2 of 3 tries. On keep-alive connections Node itself discards the
 * rest after the answer, so nothing is done there.
 */
export function drainBeforeClose(): MiddlewareHandler<EdgeEnv> {
  // Decided from the request alone, so keep-alive requests (nearly all) pay nothing.
  return (c, next) => {
    const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
    if (
      incoming === undefined ||
      c.req.method === "GET" ||
      c.req.method === "HEAD" ||
      !closesAfter(incoming)
    ) {
      return next();
    }
    return next().then(() => drain(incoming));
  };
}

/** Reads and discards what is left of a request body, for at most {@link drainMs}. */
function drain(incoming: IncomingMessage): Promise<void> {
  if (incoming.complete || incoming.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      incoming.off("end", done).off("error", done).off("close", done);
      resolve();
    };
    const timer = setTimeout(done, drainMs);
    incoming.on("end", done).on("error", done).on("close", done);
    // As Node's own IncomingMessage._dump: a body stream a handler abandoned (hono's chunked
    // body limit) keeps a 'data' listener that pauses the request again; drop it, then read on.
    incoming.removeAllListeners("data");
    incoming.resume();
  });
}
