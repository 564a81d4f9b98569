import type { Command } from "commander";
import { loadRevenueInputs, revenueReport, type RevenueReport } from "../../accounting/index.js";
import { minorToDecimal } from "../../rating/index.js";
import { monthOption, withJournal } from "./journals.js";

/** The revenue report as a table. */
function table(r: RevenueReport): string {
  const cols = ["currency", "account", "role", "recognized", "posted", "billed", "deferred"];
  const rows = [
    ...r.data.map((d) => [
      d.currency,
      d.account,
      d.role,
      ...[d.recognized, d.posted, d.billed, d.deferred_balance].map((n) =>
        minorToDecimal(n, d.currency_exponent),
      ),
    ]),
    ...r.totals.map((t) => [
      t.currency,
      "total",
      "net",
      ...[t.recognized, t.posted, t.billed, t.deferred_balance].map((n) =>
        minorToDecimal(n, t.currency_exponent),
      ),
    ]),
  ];
  const width = cols.map((c, i) => Math.max(c.length, ...rows.map((x) => x[i]!.length)));
  const fmt = (x: string[]) =>
    x.map((v, i) => (i >= 3 ? v.padStart(width[i]!) : v.padEnd(width[i]!))).join("  ");
  return [`revenue ${r.month} (${r.timezone})`, fmt(cols), ...rows.map(fmt)].join("\n");
}

export function registerRevenueCommand(program: Command): void {
  program
    .command("revenue")
    .description(
      "recognized, posted, billed and deferred revenue of a month per currency and account, from the posted journal",
    )
    .requiredOption("--month <YYYY-MM>", "the month", monthOption)
    .option("--json", "print JSON (the GET /v1/revenue answer)")
    .action(async (opts: { month: string; json?: boolean }) => {
      await withJournal(async (journal, chart, tz) => {
        const report = revenueReport(opts.month, tz, chart, await loadRevenueInputs(journal, opts.month));
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${table(report)}\n`);
      });
    });
}
