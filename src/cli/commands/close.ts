import type { Command } from "commander";
import type { Invoice } from "../../billing/index.js";
import { createLogger } from "../../observability/index.js";
import { minorToDecimal } from "../../rating/index.js";
import { startClose } from "../../runtime/close.js";
import { configOrExit } from "../config.js";
import { onShutdown } from "./serve.js";

const envHelp = "\nConfiguration comes from TALLY_* environment variables; see README 'Configuration'.";

/** One invoice as a few human lines. */
export function describeInvoice(inv: Invoice): string {
  const money = (n: number) => `${minorToDecimal(n, inv.currency_exponent)} ${inv.currency}`;
  const out = [
    `${inv.number ?? "(draft)"}  ${inv.id}  ${inv.status}  ${inv.customer}  ${inv.period.start} .. ${inv.period.end}  total ${money(inv.total)}`,
  ];
  for (const l of inv.lines) {
    const tag = l.true_up ? " [true-up]" : "";
    out.push(
      `  ${String(l.number).padStart(3)}  ${l.description}${tag}  qty ${l.quantity}  ${money(l.amount)}`,
    );
  }
  return out.join("\n");
}

export function registerCloseCommand(program: Command): void {
  program
    .command("close")
    .description(
      "billing close: turns every subscription period that ended more than its grace period ago into a finalized invoice (one leader at a time; resumable)",
    )
    .option("--once", "run one close now and exit (default: keep running every TALLY_CLOSE_INTERVAL_MS)")
    .option("--dry-run", "print the invoices the next close would produce, storing nothing (implies --once)")
    .option("--json", "with --once or --dry-run: print JSON instead of text")
    .addHelpText("after", envHelp)
    .action(async (opts: { once?: boolean; dryRun?: boolean; json?: boolean }) => {
      const config = configOrExit();
      const log = createLogger("close", config.logLevel);
      if (!opts.once && !opts.dryRun) {
        const close = await startClose(config, log);
        log.info({ intervalMs: config.close.intervalMs }, "close running");
        onShutdown(log, () => close.stop());
        return;
      }
      const close = await startClose(config, log, false);
      try {
        // A close that died holds the lease until the server expires it (its TTL, plus the
        // server's expiry timer): wait up to twice that for it.
        const report = await close.runOnce({
          dryRun: opts.dryRun === true,
          waitMs: 2 * config.close.leaseTtlMs + 1000,
        });
        if (report === null) {
          process.stderr.write("another close process kept the leader lease; nothing done\n");
          process.exitCode = 3;
          return;
        }
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        } else {
          const invoices = opts.dryRun
            ? report.drafts
            : ((await Promise.all(report.finalized.map((id) => close.invoices.get(id)))).filter(
                Boolean,
              ) as Invoice[]);
          for (const inv of invoices) process.stdout.write(`${describeInvoice(inv)}\n`);
          process.stdout.write(
            `${opts.dryRun ? "would finalize" : "finalized"} ${invoices.length}; waiting for the watermark ${report.waiting.length}; errors ${report.errors.length}\n`,
          );
          for (const e of report.errors) process.stdout.write(`  error ${e.subscription}: ${e.message}\n`);
        }
        if (report.errors.length > 0) process.exitCode = 1;
      } finally {
        await close.stop();
      }
    });
}
