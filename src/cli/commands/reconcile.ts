import { InvalidArgumentError, type Command } from "commander";
import { openReconciler } from "../../accounting/reconcile-setup.js";
import { formatReport, monthRange } from "../../accounting/reconcile.js";
import { InvoiceStore } from "../../billing/index.js";
import { busNames } from "../../bus/index.js";
import { CatalogStore } from "../../catalog/index.js";
import { createLogger } from "../../observability/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

function month(value: string): string {
  try {
    monthRange(value, "UTC");
  } catch (err: unknown) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return value;
}

export function registerReconcileCommand(program: Command): void {
  program
    .command("reconcile")
    .description(
      "compare, per customer and document, Tally's invoices with the Stripe invoices pushed (read live) and the journal; exits 1 on any difference",
    )
    .requiredOption("--month <YYYY-MM>", "the accounting month (documents dated in it)", month)
    .option("--json", "print the report as JSON")
    .action(async (opts: { month: string; json?: boolean }) => {
      const config = configOrExit();
      const log = createLogger("reconcile", config.logLevel);
      const nc = await connectNats(config, "tally-reconcile");
      try {
        const js = nc.jetstream();
        const names = busNames(config.nats.prefix);
        const invoices = await InvoiceStore.open(js, names.invoicesBucket, config.nats.replicas);
        const catalog = await CatalogStore.open(js, names.catalogBucket, config.nats.replicas, log);
        await catalog.start();
        const reconciler = await openReconciler({ js, invoices, catalog, config, log });
        try {
          const report = await reconciler.run(opts.month);
          process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
          if (report.differences.length > 0) process.exitCode = 1;
        } finally {
          reconciler.stop();
          await catalog.close();
        }
      } finally {
        await nc.drain();
      }
    });
}
