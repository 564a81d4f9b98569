/**
 * Journal benchmark: posting entries for N finalized invoices (one round of `postJournals`, as
 * the close role runs after a close), a second round with nothing to do, listing the month, and
 * the revenue report of the month, on a real nats-server.
 *
 *   npm run bench -- journal [--invoices 20000] [--lines 5]
 *   node dist/bench/journal.js [same flags]          (after npm run build)
 *
 * Invoices are stored finalized through InvoiceStore (single-day service periods: the usage
 * split by month, which reads ClickHouse, is not exercised). Prints one JSON line last.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { JournalStore, loadRevenueInputs, postJournals, revenueReport } from "../src/accounting/index.js";
import { InvoiceStore, type Invoice, type InvoiceLine } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { CatalogStore, parseCatalogDocument } from "../src/catalog/index.js";
import { loadConfig } from "../src/config/index.js";
import { startNats } from "../src/dev/servers.js";
import { createLogger } from "../src/observability/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { draftInvoice, fixtureDay } from "../test/fixtures/draft-invoice.js";

const iso = (ms: number) => new Date(ms).toISOString();

function parseArgs(args: string[]): { invoices: number; lines: number } {
  const a = { invoices: 20_000, lines: 5 };
  for (let i = 0; i < args.length; i += 2) {
    const k = args[i]?.replace(/^--/, "");
    const v = Number(args[i + 1]);
    if ((k !== "invoices" && k !== "lines") || !Number.isInteger(v) || v < 1)
      throw new Error(`usage: journal [--invoices N] [--lines N] (got ${args.join(" ")})`);
    a[k] = v;
  }
  return a;
}

function progress(msg: string): void {
  process.stderr.write(`[journal ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  const dir = mkdtempSync(join(os.tmpdir(), "tally-bench-journal-"));
  const nats = await startNats({ dataDir: dir });
  const log = createLogger("bench", "warn");
  try {
    const config = loadConfig({
      TALLY_NATS_URL: nats.url,
      TALLY_NATS_PREFIX: `bj${Date.now().toString(36)}`,
    });
    const nc = await connectNats(config, "bench-journal");
    const js = nc.jetstream();
    const names = busNames(config.nats.prefix);
    const catalog = await CatalogStore.open(js, names.catalogBucket, 1, log);
    await catalog.start();
    await catalog.applyDocument(
      parseCatalogDocument(
        `accounts: { receivable: "1200", cash: "1000", deferred_revenue: "2400", discounts: "4900", revenue: "4000" }`,
        catalog.lookup(),
      ),
    );
    const invoices = await InvoiceStore.open(js, names.invoicesBucket, 1, log);
    const { start, ms } = fixtureDay;
    progress(`storing ${args.invoices} finalized invoices of ${args.lines} lines`);
    for (let b = 0; b < args.invoices; b += 1000) {
      const drafts: Invoice[] = [];
      for (let i = b; i < Math.min(args.invoices, b + 1000); i++) {
        const lines: InvoiceLine[] = Array.from({ length: args.lines }, (_, k) => ({
          number: k + 1,
          kind: k === args.lines - 1 && k > 0 ? "discount" : "usage",
          plan: "daily",
          price: `p${k}`,
          meter: null,
          description: `line ${k + 1}`,
          period: { start: iso(start), end: iso(start + ms) },
          quantity: "1",
          unit_amount_decimal: null,
          amount: k === args.lines - 1 && k > 0 ? -7 : 100 + ((i * 7 + k) % 900),
        }));
        drafts.push(draftInvoice(`inv_${i.toString(16).padStart(24, "0")}`, `c${i}`, `s${i}`, lines));
      }
      await invoices.putDrafts(drafts);
      await invoices.finalize(
        drafts.map((d) => d.id),
        "TALLY",
      );
    }
    const journal = await JournalStore.open(js, names.journalBucket, 1, log);
    const deps = {
      js,
      journal,
      invoices,
      catalog,
      snapshots: {
        snapshot: () => Promise.reject(new Error("no usage line spans months in this bench")),
      },
      timezone: "UTC",
      log,
    };
    const rss0 = process.memoryUsage().rss;
    let t = performance.now();
    const first = await postJournals(deps);
    const postS = (performance.now() - t) / 1000;
    progress(`posted ${first.posted.invoice} entries in ${postS.toFixed(1)} s`);
    t = performance.now();
    const second = await postJournals(deps);
    const idleS = (performance.now() - t) / 1000;
    progress(`second round (fresh watches, nothing to post) in ${idleS.toFixed(1)} s`);
    const month = iso(start).slice(0, 7);
    t = performance.now();
    const listed = await journal.list({ from: `${month}-01`, to: `${month}-31` });
    const listS = (performance.now() - t) / 1000;
    progress(`listed the month (${listed.length} entries) in ${listS.toFixed(1)} s`);
    t = performance.now();
    const report = revenueReport(month, "UTC", catalog.chart()!, await loadRevenueInputs(journal, month));
    const reportS = (performance.now() - t) / 1000;
    const result = {
      bench: "journal",
      invoices: args.invoices,
      lines: args.lines,
      posted: first.posted.invoice,
      post_seconds: Number(postS.toFixed(2)),
      entries_per_second: Math.round(first.posted.invoice / postS),
      second_round_posted: second.posted.invoice,
      second_round_seconds: Number(idleS.toFixed(2)),
      list_month_entries: listed.length,
      list_month_seconds: Number(listS.toFixed(2)),
      revenue_report_seconds: Number(reportS.toFixed(2)),
      revenue_recognized: report.totals[0]?.recognized,
      rss_growth_mb: Math.round((process.memoryUsage().rss - rss0) / 1e6),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await catalog.close();
    await nc.drain();
  } finally {
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Run directly (`node dist/bench/journal.js`) as well as through bench/run.ts.
if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
