/**
 * Xero push benchmark: journal entries pushed per minute against the local Xero test server
 * (test/xero-server) with Xero's production limits on both sides (60 calls per 60 s, 5,000 per
 * day, 5 concurrent per organisation), through XeroPusher on a real NATS.
 *
 *   npm run bench -- xero [--journals 6000] [--per-request 50] [--latency-ms 300] [--lines 4]
 *   node dist/bench/run.js xero [same flags]          (after npm run build)
 *
 * 1. Starts nats-server in a temp dir and the Xero test server in this process, limits on,
 *    with `--latency-ms` added to every ManualJournals request (Xero's own processing time is
 *    not published; a large insert "can take quite a while").
 * 2. Pushes `--journals` invoice entries of `--lines` revenue lines each, `--per-request` per
 *    call (TALLY_XERO_JOURNALS_PER_REQUEST).
 * 3. Prints journals/minute (overall and after the first minute, when the minute budget is the
 *    bound), calls, the most calls the server saw in any 60 s, 429s, request size; checks every
 *    journal is in Xero once. One JSON line `{"bench":"xero",...}` last.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { busNames } from "../src/bus/index.js";
import { loadConfig } from "../src/config/index.js";
import {
  CallLimiter,
  narrationMarker,
  XeroClient,
  XeroPusher,
  XeroStore,
} from "../src/connectors/xero/index.js";
import { startNats } from "../src/dev/servers.js";
import { createLogger } from "../src/observability/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { invoiceEntry } from "../test/fixtures/journal-entries.js";
import { startXeroServer } from "../test/xero-server/index.js";
import { intArg } from "./lib/args.js";

const PUT = "PUT /api.xro/2.0/ManualJournals";

function progress(msg: string): void {
  process.stderr.write(`[xero ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export async function main(argv: string[]): Promise<void> {
  const journals = intArg(argv, "journals", 6000, 1);
  const perRequest = intArg(argv, "per-request", 50, 1);
  const latencyMs = intArg(argv, "latency-ms", 300, 0);
  const lines = intArg(argv, "lines", 4, 1);
  const dir = mkdtempSync(join(os.tmpdir(), "tally-bench-xero-"));
  const nats = await startNats({ dataDir: dir });
  const srv = await startXeroServer({ port: 0 });
  if (latencyMs > 0) srv.faults.latency({ ms: latencyMs, endpoint: PUT });
  const log = createLogger("bench", "warn");
  try {
    const config = loadConfig({
      TALLY_NATS_URL: nats.url,
      TALLY_NATS_PREFIX: `bx${Date.now().toString(36)}`,
      TALLY_XERO_CLIENT_ID: srv.clientId,
      TALLY_XERO_CLIENT_SECRET: srv.clientSecret,
      TALLY_XERO_API_BASE: srv.url,
      TALLY_XERO_IDENTITY_URL: srv.url,
      TALLY_XERO_JOURNALS_PER_REQUEST: String(perRequest),
    });
    const nc = await connectNats(config, "bench-xero");
    const store = await XeroStore.open(nc.jetstream(), busNames(config.nats.prefix).xeroBucket, 1);
    const x = config.xero;
    const limiter = new CallLimiter(store, {
      perMinute: x.callsPerMinute,
      windowMs: x.minuteWindowMs,
      perDay: x.callsPerDay,
    });
    const client = new XeroClient(x, limiter, log);
    const pusher = new XeroPusher({ store, client, config: x, log });
    const entries = Array.from({ length: journals }, (_, i) =>
      invoiceEntry({
        seed: `bench${i}`,
        revenue: Array.from({ length: lines }, (_, k) => ({
          account: k % 2 === 0 ? "200" : "260",
          amount: 1_000 + ((i * 7 + k * 13) % 10_000),
          description: `Usage line ${k + 1} of invoice ${i}`,
        })),
      }),
    );
    progress(
      `pushing ${journals} journals, ${perRequest} per request, ${latencyMs} ms server latency, limits 60/min`,
    );
    const t0 = performance.now();
    const tick = setInterval(() => progress(`${srv.state.allJournals().length} journals in Xero`), 15_000);
    const report = await pusher.pushJournals(entries);
    clearInterval(tick);
    const seconds = (performance.now() - t0) / 1000;
    const puts = srv.requests.of(PUT);
    const firstPut = puts[0]!.at;
    // After the first minute the minute budget is the bound: the steady rate.
    const late = puts.filter((r) => r.at >= firstPut + 60_000);
    const lateSpan = late.length > 1 ? (late[late.length - 1]!.at - late[0]!.at) / 60_000 : 0;
    const lateJournalsPerMin =
      lateSpan > 0 ? late.slice(1).reduce((s, r) => s + r.created, 0) / lateSpan : null;
    let once = 0;
    for (const e of entries) if (srv.state.journalsWithNarration(narrationMarker(e.id)).length === 1) once++;
    const result = {
      bench: "xero",
      journals,
      per_request: perRequest,
      lines_per_journal: lines + 1,
      latency_ms: latencyMs,
      seconds: Number(seconds.toFixed(1)),
      journals_per_minute: Number(((report.pushed / seconds) * 60).toFixed(0)),
      steady_journals_per_minute: lateJournalsPerMin === null ? null : Number(lateJournalsPerMin.toFixed(0)),
      calls: srv.requests.api().length,
      put_calls: puts.length,
      max_calls_in_60s: srv.requests.maxInWindow(60_000),
      server_429s: srv.requests.api().filter((r) => r.status === 429).length,
      request_bytes_max: Math.max(...puts.map((r) => r.bytes)),
      request_bytes_avg: Math.round(puts.reduce((s, r) => s + r.bytes, 0) / puts.length),
      exactly_once: once === journals,
      pushed: report.pushed,
    };
    process.stdout.write(
      [
        `journals            ${journals} (${lines + 1} lines each), ${perRequest} per request`,
        `elapsed             ${result.seconds} s`,
        `journals/minute     ${result.journals_per_minute} overall, ${result.steady_journals_per_minute ?? "n/a"} after the first minute`,
        `calls               ${result.calls} (${result.put_calls} ManualJournals), max ${result.max_calls_in_60s} in any 60 s, ${result.server_429s} x 429`,
        `request size        avg ${result.request_bytes_avg} B, max ${result.request_bytes_max} B (Xero limit 3.5 MB)`,
        `exactly once        ${result.exactly_once}`,
        "",
      ].join("\n"),
    );
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await client.close();
    await nc.drain();
  } finally {
    await srv.stop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
