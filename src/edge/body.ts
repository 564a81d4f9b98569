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
