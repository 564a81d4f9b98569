import { InvalidArgumentError, type Command } from "commander";
import { exportCsv, JournalStore, lastDayOf, monthPattern } from "../../accounting/index.js";
import { busNames } from "../../bus/index.js";
import { CatalogStore, type Accounts } from "../../catalog/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

/** `--month YYYY-MM`. */
export function monthOption(value: string): string {
  if (!monthPattern.test(value))
    throw new InvalidArgumentError("must be a calendar month YYYY-MM, e.g. 2026-11");
  return value;
}

/**
 * Opens the journal and the catalog's chart; exits 2 with a clear message when the catalog has no
 * `accounts:` section (nothing is journalled then).
 */
export async function withJournal<T>(
  fn: (journal: JournalStore, chart: Accounts, timezone: string) => Promise<T>,
): Promise<T | null> {
  const config = configOrExit();
  const nc = await connectNats(config, "tally-journals");
  try {
    const names = busNames(config.nats.prefix);
    const catalog = await CatalogStore.open(nc.jetstream(), names.catalogBucket, config.nats.replicas);
    await catalog.start();
    const chart = catalog.chart();
    await catalog.close();
    if (chart === undefined) {
      process.stderr.write(
        "accounts are not configured: apply a catalog with an accounts: section (see src/accounting/README.md)\n",
      );
      process.exitCode = 2;
      return null;
    }
    const journal = await JournalStore.open(nc.jetstream(), names.journalBucket, config.nats.replicas);
    return await fn(journal, chart, config.accounting.timezone);
  } finally {
    await nc.drain();
  }
}

export function registerJournalsCommand(program: Command): void {
  const journals = program
    .command("journals")
    .description("the double-entry journal posted from invoices and payments");
  journals
    .command("export")
    .description(
      "every journal line of the entries dated in a month, to stdout (CSV with a header, or JSON entries)",
    )
    .requiredOption("--month <YYYY-MM>", "the month of the entries' dates", monthOption)
    .option(
      "--format <format>",
      "csv or json",
      (v: string) => {
        if (v !== "csv" && v !== "json") throw new InvalidArgumentError("must be csv or json");
        return v;
      },
      "csv",
    )
    .action(async (opts: { month: string; format: "csv" | "json" }) => {
      await withJournal(async (journal) => {
        const entries = await journal.list({ from: `${opts.month}-01`, to: lastDayOf(opts.month) });
        process.stdout.write(
          opts.format === "csv" ? exportCsv(entries) : `${JSON.stringify(entries, null, 2)}\n`,
        );
      });
    });
}
