import type { Command } from "commander";
import { InvoiceStore } from "../../billing/index.js";
import { busNames } from "../../bus/index.js";
import { CatalogStore } from "../../catalog/index.js";
import { JournalStore } from "../../accounting/index.js";
import { openStripePusher, type PushReport } from "../../connectors/stripe/index.js";
import { openXeroPusher, XeroDuePusher } from "../../connectors/xero/index.js";
import { createLogger, type Logger } from "../../observability/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";
import { onShutdown } from "./serve.js";

function summary(r: PushReport): string {
  const lines = [
    `pushed ${r.pushed.length}; failed ${r.failed.length}; mismatched ${r.mismatched.length}; skipped ${r.skipped.length}; backing off ${r.backingOff}`,
  ];
  for (const f of r.failed) lines.push(`  failed ${f.invoice}: ${f.code}: ${f.message}`);
  for (const m of r.mismatched) lines.push(`  ALERT total mismatch ${m} (tally invoices show ${m})`);
  for (const s of r.skipped) lines.push(`  skipped ${s.invoice}: ${s.reason}`);
  return lines.join("\n");
}

/** Runs `push` now and every `intervalMs` (one run at a time) until SIGTERM/SIGINT, then `stop`. */
function keepPushing(
  log: Logger,
  intervalMs: number,
  what: string,
  stop: () => Promise<void>,
  push: () => Promise<void>,
): void {
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = running
      .then(push)
      .catch((err: unknown) => log.error({ err }, `${what} push run failed; will retry`));
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  onShutdown(log, async () => {
    clearInterval(timer);
    await running;
    await stop();
  });
}

export function registerPushCommand(program: Command): void {
  const push = program.command("push").description("push finalized invoices to an invoicing system");
  push
    .command("stripe")
    .description(
      "push finalized invoices to Stripe Invoicing (customers with external_ids.stripe_customer_id); resumable, never twice",
    )
    .option("--once", "push what is due now and exit (default: keep pushing every TALLY_CLOSE_INTERVAL_MS)")
    .option("--invoice <id>", "push only this invoice, now, even if its last failure is backing off")
    .option("--json", "with --once or --invoice: print the report as JSON")
    .addHelpText("after", "\nNeeds TALLY_STRIPE_SECRET_KEY; see README 'Connect Stripe'.")
    .action(async (opts: { once?: boolean; invoice?: string; json?: boolean }) => {
      const config = configOrExit();
      const log = createLogger("push", config.logLevel);
      if (config.stripe.secretKey === undefined) {
        process.stderr.write("TALLY_STRIPE_SECRET_KEY is not set; nothing to push to\n");
        process.exitCode = 2;
        return;
      }
      const nc = await connectNats(config, "tally-push");
      const js = nc.jetstream();
      const names = busNames(config.nats.prefix);
      const catalog = await CatalogStore.open(js, names.catalogBucket, config.nats.replicas, log);
      await catalog.start();
      const invoices = await InvoiceStore.open(js, names.invoicesBucket, config.nats.replicas, log);
      const pusher = (await openStripePusher({ js, invoices, catalog, config, log }))!;
      const stop = async () => {
        await catalog.close();
        await nc.drain();
      };
      if (!opts.once && opts.invoice === undefined) {
        keepPushing(log, config.close.intervalMs, "stripe", stop, async () => {
          const r = await pusher.pushDue();
          log.info({ ...r, failed: r.failed.length, pushed: r.pushed.length }, "stripe push run");
        });
        return;
      }
      try {
        const report = await pusher.pushDue(
          opts.invoice !== undefined ? { only: [opts.invoice], force: true } : {},
        );
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${summary(report)}\n`);
        if (report.failed.length > 0 || report.mismatched.length > 0) process.exitCode = 1;
      } finally {
        await stop();
      }
    });

  push
    .command("xero")
    .description(
      "push posted journal entries to Xero as manual journals (60 calls/min, 5,000/day, 50 journals per call); resumable, never twice",
    )
    .option("--once", "push what is due now and exit (default: keep pushing every TALLY_CLOSE_INTERVAL_MS)")
    .option("--json", "with --once: print the report as JSON")
    .addHelpText(
      "after",
      "\nNeeds TALLY_XERO_CLIENT_ID, TALLY_XERO_CLIENT_SECRET, TALLY_XERO_TENANT_ID; see README 'Accounting'.",
    )
    .action(async (opts: { once?: boolean; json?: boolean }) => {
      const config = configOrExit();
      const log = createLogger("push", config.logLevel);
      if (config.xero.clientId === undefined || config.xero.clientSecret === undefined) {
        process.stderr.write(
          "TALLY_XERO_CLIENT_ID / TALLY_XERO_CLIENT_SECRET are not set; nothing to push to\n",
        );
        process.exitCode = 2;
        return;
      }
      const nc = await connectNats(config, "tally-push-xero");
      const js = nc.jetstream();
      const journal = await JournalStore.open(
        js,
        busNames(config.nats.prefix).journalBucket,
        config.nats.replicas,
        log,
      );
      const xero = (await openXeroPusher({ js, config, log, journal }))!;
      const due = new XeroDuePusher({ journal, store: xero.store, pusher: xero.pusher, log });
      const stop = async () => {
        due.stop();
        journal.stop();
        await xero.client.close();
        await nc.drain();
      };
      if (!opts.once) {
        keepPushing(log, config.close.intervalMs, "xero", stop, async () => {
          const r = await due.pushDue();
          log.info({ ...r, failed: r.failed.length }, "xero push run");
        });
        return;
      }
      try {
        const r = await due.pushDue();
        const lines = [
          `due ${r.due}; pushed ${r.pushed}; already pushed ${r.alreadyPushed}; failed ${r.failed.length}; deferred ${r.deferred}; requests ${r.requests}`,
          ...r.failed.map((f) => `  failed ${f.entry}: ${f.code}: ${f.message}`),
        ];
        process.stdout.write(opts.json ? `${JSON.stringify(r, null, 2)}\n` : `${lines.join("\n")}\n`);
        if (r.failed.length > 0) process.exitCode = 1;
      } finally {
        await stop();
      }
    });
}
