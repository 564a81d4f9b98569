/**
 * Outbound webhook benchmark: signed deliveries per second from the outbox (JetStream) through
 * the dispatcher to a local receiver, against a same-run baseline of plain undici POSTs of the
 * same body (no outbox, no log, no signing; then with signing), and how fast the close can put
 * 100,000 `invoice.finalized` events into the outbox.
 *
 *   npm run bench -- webhooks [--deliveries 5000] [--close-events 100000]
 *   node dist/bench/run.js webhooks [same flags]          (after the build)
 *
 * 1. Starts nats-server in a temp dir and a receiver in a child process (Node http server
 *    answering 200 to every POST; it keeps the last request so its signature is verified here).
 * 2. Baselines: `--deliveries` POSTs with undici, 8 in flight on 8 connections (the dispatcher's
 *    default per-endpoint concurrency), unsigned, then each signed with `standardwebhooks`.
 * 3. Outbox: one endpoint; `--deliveries` events emitted (`emitMany`: batches of 200) and
 *    delivered by a `WebhookDispatcher` (default settings: 8 per endpoint). Time from the first
 *    emit to the last request received. Then 4 endpoints x `--deliveries`/4 events (fan-out),
 *    then 1 endpoint with TALLY_WEBHOOK_ENDPOINT_CONCURRENCY=32.
 * 4. Close scale: `--close-events` invoice.finalized events emitted as the close does (emitAll
 *    per numbering batch of 1000), no endpoints; events/s, i.e. what the close waits for.
 * 5. Prints a table and one JSON line `{"bench":"webhooks",...}` last.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Webhook } from "standardwebhooks";
import { Agent, request } from "undici";
import { invoiceId } from "../src/billing/index.js";
import { loadConfig } from "../src/config/index.js";
import { startNats } from "../src/dev/servers.js";
import { createLogger } from "../src/observability/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { emitAll, invoiceFinalized, openWebhooks, startDispatcher } from "../src/webhooks/index.js";
import { draftInvoice } from "../test/fixtures/draft-invoice.js";
import { intArg } from "./lib/args.js";
import { fmt, machineBase, progressLog, table } from "./lib/report.js";

const progress = progressLog("webhooks");

/** The receiver: a separate process so it does not share the dispatcher's event loop. */
const receiverSource = `
import { createServer } from "node:http";
let count = 0; let last = null;
const server = createServer((req, res) => {
  if (req.method === "GET") { res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ count, last })); return; }
  const chunks = []; req.on("data", (c) => chunks.push(c));
  req.on("end", () => { count++; last = { headers: req.headers, body: Buffer.concat(chunks).toString() };
    res.writeHead(200); res.end("ok"); });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => process.stdout.write(String(server.address().port) + "\\n"));
`;

async function startReceiver(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--input-type=module", "-e", receiverSource], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<string>((resolve) =>
    child.stdout.once("data", (d: Buffer) => resolve(d.toString().trim())),
  );
  return { url: `http://127.0.0.1:${port}`, child };
}

interface ReceiverState {
  count: number;
  last: { headers: Record<string, string>; body: string } | null;
}

async function state(url: string): Promise<ReceiverState> {
  const r = await request(`${url}/state`);
  return (await r.body.json()) as ReceiverState;
}

async function waitCount(url: string, n: number, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await state(url)).count < n) {
    if (Date.now() > deadline) throw new Error(`receiver got fewer than ${n} requests`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Row {
  run: string;
  deliveries: number;
  seconds: number;
  perSec: number;
  note: string;
}

export async function main(argv: string[]): Promise<void> {
  const n = intArg(argv, "deliveries", 5000, 100);
  const closeEvents = intArg(argv, "close-events", 100_000, 1000);
  const dir = mkdtempSync(join(os.tmpdir(), "tally-bench-webhooks-"));
  const nats = await startNats({ dataDir: dir });
  const receiver = await startReceiver();
  const log = createLogger("bench", "warn");
  const rows: Row[] = [];
  const payload = JSON.stringify(
    invoiceFinalized(draftInvoice(invoiceId("sub", "2026-11-01T00:00:00.000Z"), "acme", "sub", [])),
  );
  try {
    // Baselines: undici alone, same body, 8 in flight on 8 connections.
    // The first pass only warms up (JIT, receiver, connections); it is not reported.
    for (const [pass, signed] of [
      [0, false],
      [1, false],
      [2, true],
    ] as const) {
      const agent = new Agent({ connections: 8 });
      const wh = new Webhook(`whsec_${Buffer.alloc(32, 1).toString("base64")}`);
      const base = (await state(receiver.url)).count;
      const t0 = performance.now();
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const i = next++;
          const now = new Date();
          const headers: Record<string, string> = {
            "content-type": "application/json",
            "webhook-id": `evt_b_${i}`,
          };
          if (signed) {
            headers["webhook-timestamp"] = String(Math.floor(now.getTime() / 1000));
            headers["webhook-signature"] = wh.sign(`evt_b_${i}`, now, payload);
          }
          const r = await request(`${receiver.url}/baseline`, {
            method: "POST",
            dispatcher: agent,
            headers,
            body: payload,
          });
          await r.body.dump();
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      const s = (performance.now() - t0) / 1000;
      if ((await state(receiver.url)).count - base !== n) throw new Error("baseline lost requests");
      await agent.close();
      if (pass === 0) continue;
      rows.push({
        run: signed ? "baseline: undici + sign" : "baseline: undici",
        deliveries: n,
        seconds: s,
        perSec: n / s,
        note: "8 in flight",
      });
      progress(`${rows.at(-1)!.run}: ${fmt(n / s)}/s`);
    }

    // The outbox and dispatcher, 1 endpoint then 4.
    for (const [endpoints, concurrency] of [
      [1, 8],
      [4, 8],
      [1, 32],
    ] as const) {
      const prefix = `bw${endpoints}${Date.now().toString(36)}`;
      const config = loadConfig({
        TALLY_WEBHOOK_ENDPOINT_CONCURRENCY: String(concurrency),
        TALLY_NATS_URL: nats.url,
        TALLY_NATS_PREFIX: prefix,
        TALLY_WEBHOOK_ALLOW_HTTP: "true",
      });
      const nc = await connectNats(config, "bench-webhooks");
      const js = nc.jetstream();
      const hooks = await openWebhooks(js, await nc.jetstreamManager(), config);
      const secrets: string[] = [];
      for (let e = 0; e < endpoints; e++) {
        const ep = await hooks.endpoints.create({ url: `${receiver.url}/ep${e}`, description: "" });
        secrets.push(ep.secrets[0]!.secret);
      }
      const dispatcher = await startDispatcher(js, hooks, config, log);
      const events = Array.from({ length: n / endpoints }, (_, i) => ({
        ...invoiceFinalized(
          draftInvoice(invoiceId(`s${i}`, "2026-11-01T00:00:00.000Z"), "acme", `s${i}`, []),
        ),
        id: `evt_${prefix}_${i}`,
      }));
      const base = (await state(receiver.url)).count;
      const t0 = performance.now();
      await hooks.emitter.emitMany(events);
      const emitted = (performance.now() - t0) / 1000;
      await waitCount(receiver.url, base + n);
      const s = (performance.now() - t0) / 1000;
      const last = (await state(receiver.url)).last!;
      // The last request verifies with its endpoint's secret.
      const ok = secrets.some((secret) => {
        try {
          new Webhook(secret).verify(last.body, last.headers);
          return true;
        } catch {
          return false;
        }
      });
      if (!ok) throw new Error("a delivered request did not verify");
      rows.push({
        run: `outbox + dispatcher, ${endpoints} endpoint${endpoints > 1 ? "s" : ""}, ${concurrency} per endpoint`,
        deliveries: n,
        seconds: s,
        perSec: n / s,
        note: `${n / endpoints} events emitted in ${emitted.toFixed(2)} s; signed, logged, verified`,
      });
      progress(`${rows.at(-1)!.run}: ${fmt(n / s)}/s`);
      await dispatcher.stop();
      hooks.endpoints.stop();
      await nc.drain();
    }

    // What the close waits for: closeEvents invoice.finalized into the outbox, in batches of 1000.
    const prefix = `bwc${Date.now().toString(36)}`;
    const config = loadConfig({ TALLY_NATS_URL: nats.url, TALLY_NATS_PREFIX: prefix });
    const nc = await connectNats(config, "bench-webhooks-close");
    const hooks = await openWebhooks(nc.jetstream(), await nc.jetstreamManager(), config);
    const inv = draftInvoice(invoiceId("s", "2026-11-01T00:00:00.000Z"), "acme", "s", []);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const pending: Promise<void>[] = [];
    for (let b = 0; b < closeEvents; b += 1000) {
      const batch = Array.from({ length: Math.min(1000, closeEvents - b) }, (_, i) => ({
        ...invoiceFinalized({ ...inv, id: `inv_${(b + i).toString(16).padStart(24, "0")}` }),
      }));
      pending.push(emitAll(hooks.emitter, batch));
    }
    await Promise.all(pending);
    const s = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    rows.push({
      run: "close: invoice.finalized into the outbox",
      deliveries: closeEvents,
      seconds: s,
      perSec: closeEvents / s,
      note: `events/s (JetStream acked), no endpoints; ${((cpu.user + cpu.system) / 1e6).toFixed(1)} CPU s in this process`,
    });
    progress(`${rows.at(-1)!.run}: ${fmt(closeEvents / s)}/s`);
    await nc.drain();

    const header = ["run", "count", "s", "per s", "note"];
    process.stdout.write(
      `\n${table([header, ...rows.map((r) => [r.run, fmt(r.deliveries), r.seconds.toFixed(2), fmt(r.perSec), r.note])], 1)}\n\n`,
    );
    process.stdout.write(
      `${JSON.stringify({ bench: "webhooks", machine: machineBase(), deliveries: n, close_events: closeEvents, rows })}\n`,
    );
  } finally {
    receiver.child.kill("SIGKILL");
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
