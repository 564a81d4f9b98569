/**
 * The bare-Hono baseline for `bench/ingest.ts`: the same framework and HTTP server as the edge,
 * doing only what any JSON endpoint must (read the body, JSON.parse it, answer 202), with no
 * auth, validation, encoding, bus or durability. The gap between this and the edge is the cost
 * of Tally's own work on the hot path.
 *
 *   node dist/bench/baseline-server.js   # prints {"listening":<port>} on stdout
 */
import { serve } from "@hono/node-server";
import { Hono } from "hono";

const app = new Hono();
app.post("/v1/events", async (c) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await c.req.text());
  } catch {
    return c.json({ error: { code: "invalid_request", message: "body is not valid JSON" } }, 400);
  }
  return c.json({ accepted: Array.isArray(parsed) ? parsed.length : 1, duplicates: 0 }, 202);
});

const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => {
  process.stdout.write(`${JSON.stringify({ listening: info.port })}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
