/**
 * Stripe push benchmark: finalized invoices pushed per second against the local Stripe test
 * server (test/stripe-server) through the real `stripe` SDK, with the client-side limiter at
 * 25 requests/s (Stripe's sandbox limit) and 100 requests/s (live mode; each endpoint still 25/s),
 * and what that means for a close of 10,000 and 100,000 customers.
 *
 *   npm run bench -- push [--invoices 300] [--lines 5]
 *   node dist/bench/push.js [same flags]          (after npm run build)
 *
 * 1. Starts nats-server in a temp dir; stores `--invoices` finalized invoices of `--lines` lines
 *    each (one customer each, with a Stripe customer) through InvoiceStore, per run.
 * 2. Starts the Stripe test server in this process with Stripe's own limits switched on (global
 *    25/s, or 25/s per endpoint for the live-mode run), so any request over the limit shows as a 429.
 * 3. Pushes them all with StripePusher (`pushDue`), measures invoices/s and requests/s, counts
 *    429s, and checks every Stripe invoice's lines and total against Tally's.
 * 4. Prints a table and one JSON line `{"bench":"push",...}` last.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import Stripe from "stripe";
import { invoiceId, InvoiceStore, type Invoice } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { CatalogStore, customerSchema } from "../src/catalog/index.js";
import { loadConfig } from "../src/config/index.js";
import { createStripeClient, PushStore, StripePusher } from "../src/connectors/stripe/index.js";
import { startNats } from "../src/dev/servers.js";
import { createLogger } from "../src/observability/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { draftInvoice } from "../test/fixtures/draft-invoice.js";
import { startStripeServer } from "../test/stripe-server/index.js";

const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();

interface Args {
  invoices: number;
  lines: number;
}

function parseArgs(args: string[]): Args {
  const a: Args = { invoices: 300, lines: 5 };
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i]?.replace(/^--/, "") as keyof Args | undefined;
    const v = Number(args[i + 1]);
    if (k === undefined || !(k in a) || !Number.isInteger(v) || v < 1)
      throw new Error(`usage: push [--invoices N] [--lines N] (got ${args.join(" ")})`);
    a[k] = v;
  }
  return a;
}

function progress(msg: string): void {
  process.stderr.write(`[push ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface RunResult {
  mode: string;
  maxRps: number;
  invoices: number;
  seconds: number;
  invoicesPerSec: number;
  requests: number;
  requestsPerSec: number;
  requestsPerInvoice: number;
  server429: number;
  exact: boolean;
  close10k: string;
  close100k: string;
}

function duration(sec: number): string {
  if (sec < 120) return `${sec.toFixed(0)} s`;
  if (sec < 7200) return `${(sec / 60).toFixed(1)} min`;
  return `${(sec / 3600).toFixed(2)} h`;
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  const dir = mkdtempSync(join(os.tmpdir(), "tally-bench-push-"));
  const nats = await startNats({ dataDir: dir });
  const log = createLogger("bench", "warn");
  const results: RunResult[] = [];
  try {
    for (const run of [
      { mode: "sandbox", maxRps: 25, server: { perSecond: 25, scope: "global" as const } },
      { mode: "live", maxRps: 100, server: { perSecond: 25, scope: "endpoint" as const } },
    ]) {
      const srv = await startStripeServer({ port: 0 });
      const prefix = `b${run.maxRps}${Date.now().toString(36)}`;
      const config = loadConfig({
        TALLY_NATS_URL: nats.url,
        TALLY_NATS_PREFIX: prefix,
        TALLY_STRIPE_SECRET_KEY: "sk_test_bench",
        TALLY_STRIPE_API_BASE: srv.url,
        TALLY_STRIPE_MAX_RPS: String(run.maxRps),
        TALLY_STRIPE_CONCURRENCY: "32",
      });
      const nc = await connectNats(config, "bench-push");
      const js = nc.jetstream();
      const names = busNames(prefix);
      const invoices = await InvoiceStore.open(js, names.invoicesBucket, 1);
      const catalog = await CatalogStore.open(js, names.catalogBucket, 1);
      await catalog.start();
      const store = await PushStore.open(js, names.pushBucket, 1);
      const sdk = new Stripe("sk_test_bench", { host: srv.host, port: srv.port, protocol: "http" });
      progress(`${run.mode}: storing ${args.invoices} finalized invoices of ${args.lines} lines`);
      const customers = [];
      for (let c = 0; c < args.invoices; c++) {
        const cus = await sdk.customers.create({ name: `c${c}` });
        customers.push(
          customerSchema.parse({
            key: `c${c}`,
            currency: "usd",
            external_ids: { stripe_customer_id: cus.id },
          }),
        );
      }
      await catalog.customers.apply(customers);
      while (catalog.customers.list().length < args.invoices) await new Promise((r) => setTimeout(r, 50));
      const P0 = Date.UTC(2026, 9, 1);
      const drafts: Invoice[] = customers.map((c) => {
        const lines = Array.from({ length: args.lines }, (_, k) => ({
          number: k + 1,
          kind: "usage" as const,
          plan: "p",
          price: `p${k}`,
          meter: `m${k}`,
          description: `meter m${k}`,
          period: { start: iso(P0), end: iso(P0 + DAY) },
          quantity: "1",
          unit_amount_decimal: null,
          amount: 100 + k * 37,
        }));
        return draftInvoice(invoiceId(`${c.key}-sub`, iso(P0)), c.key, `${c.key}-sub`, lines, {
          plans: [{ key: "p", version: 1 }],
          currency: "USD",
        });
      });
      await invoices.putDrafts(drafts);
      await invoices.finalize(
        drafts.map((d) => d.id),
        "TALLY",
      );
      srv.requests.clear();
      srv.faults.rateLimit(run.server);
      const pusher = new StripePusher({
        invoices,
        catalog,
        store,
        client: createStripeClient(config.stripe),
        config: config.stripe,
        log,
      });
      progress(`${run.mode}: pushing at ${run.maxRps} req/s`);
      const t0 = performance.now();
      const report = await pusher.pushDue();
      const seconds = (performance.now() - t0) / 1000;
      const all = srv.requests.all();
      let exact = report.pushed.length === args.invoices && report.failed.length === 0;
      for (const d of drafts) {
        // One Stripe invoice per 250 lines (parts); every line once, amounts summing to Tally's total.
        const s = [...srv.state.invoices.values()].filter((i) => i.metadata.tally_invoice === d.id);
        const lines = s.flatMap((i) => i.lines);
        if (
          s.length !== Math.ceil(d.lines.length / config.stripe.maxLinesPerInvoice) ||
          new Set(lines.map((l) => l.metadata.tally_line)).size !== d.lines.length ||
          lines.length !== d.lines.length ||
          lines.reduce((a, l) => a + l.amount, 0) !== d.total
        )
          exact = false;
      }
      const perSec = args.invoices / seconds;
      results.push({
        mode: run.mode,
        maxRps: run.maxRps,
        invoices: args.invoices,
        seconds,
        invoicesPerSec: perSec,
        requests: all.length,
        requestsPerSec: all.length / seconds,
        requestsPerInvoice: all.length / args.invoices,
        server429: all.filter((r) => r.status === 429).length,
        exact,
        close10k: duration(10_000 / perSec),
        close100k: duration(100_000 / perSec),
      });
      await catalog.close();
      await nc.drain();
      await srv.stop();
    }
  } finally {
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = [
    "| mode | limiter | invoices | s | invoices/s | req/s | req/invoice | 429s | exact | close 10k | close 100k |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ...results.map(
      (r) =>
        `| ${r.mode} | ${r.maxRps}/s | ${r.invoices} | ${r.seconds.toFixed(1)} | ${r.invoicesPerSec.toFixed(2)} | ${r.requestsPerSec.toFixed(1)} | ${r.requestsPerInvoice.toFixed(2)} | ${r.server429} | ${r.exact} | ${r.close10k} | ${r.close100k} |`,
    ),
  ];
  process.stdout.write(`${rows.join("\n")}\n`);
  process.stdout.write(`${JSON.stringify({ bench: "push", args, results })}\n`);
}

// Run directly (`node dist/bench/push.js`) as well as through bench/run.ts.
if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
