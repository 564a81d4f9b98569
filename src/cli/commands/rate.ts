import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import {
  compilePlan,
  formatIssue,
  parseCatalog,
  parseSubscription,
  parseUsage,
  rate,
  RatingInputError,
  resolvePeriod,
  selectPlan,
} from "../../rating/index.js";
import type {
  Catalog,
  RatedInvoice,
  RatingInput,
  RatingIssue,
  SubscriptionChange,
} from "../../rating/index.js";

/** Options of `tally rate`, as commander parses them. */
interface RateOptions {
  plan: string;
  usage: string;
  planKey?: string;
  periodStart?: string;
  periodEnd?: string;
  seats?: string;
  subscription?: string;
  subscriptionStart?: string;
  compact?: boolean;
}

const HELP_AFTER = `
Prints { currency, currency_exponent, period, lines: [...], subtotal, total } as JSON; every
amount is an integer in the currency's minor units (cents for USD, yen for JPY).

Files:
  --plan          YAML or JSON: a catalog with plans: [...] (other sections such as meters: are
                  ignored), or one plan at the top level. With several plans, pick one with --plan-key.
  --usage         JSON (or YAML) mapping meter keys to quantities for the period:
                  { "api_calls": 1250000, "storage_gb_hours": "7320.5" }. Meters not listed count as 0.
  --subscription  optional JSON: { "plan": "pro", "started_at": ISO, "seats": 5,
                  "changes": [ { "at": ISO, "seats": 8 }, { "at": ISO, "plan": "scale", "usage": {...} } ] }
                  The --usage file is the usage of the plan in effect at the start of the period;
                  a plan change carries the usage measured after it. Flags override the file.

Period: --period-start/--period-end are ISO 8601 with a zone (2026-11-01T00:00:00Z). Given one, the
other is one plan interval away; given neither, the current calendar period (UTC) of the plan's interval.

Example:
  tally rate --plan examples/plan.yaml --usage examples/usage.json \\
    --period-start 2026-11-01T00:00:00Z --subscription-start 2026-03-01T00:00:00Z --seats 12

See docs/rating.md for the plan format.`;

/**
 * Adds `tally rate`: price a usage file with a plan file and print the invoice lines as JSON.
 * Reading files happens here; pricing is `rate()` from src/rating, the same code the close job runs.
 *
 * @example
 * ```ts
 * const program = new Command("tally");
 * registerRateCommand(program);
 * await program.parseAsync(process.argv);
 * ```
 */
export function registerRateCommand(program: Command): void {
  program
    .command("rate")
    .description("price usage with a plan and print the invoice line items as JSON")
    .requiredOption("--plan <file>", "plan catalog file (YAML or JSON)")
    .requiredOption("--usage <file>", "usage file: JSON object of meter key → quantity")
    .option("--plan-key <key>", "plan to use when the catalog holds several")
    .option("--period-start <iso>", "billing period start, e.g. 2026-11-01T00:00:00Z")
    .option("--period-end <iso>", "billing period end (exclusive)")
    .option("--seats <n>", "seat count at the start of the period (for seat prices)")
    .option("--subscription <file>", "subscription timeline file (JSON): start, seats, seat and plan changes")
    .option("--subscription-start <iso>", "when the subscription started (anchors discount durations)")
    .option("--compact", "print the JSON on one line")
    .addHelpText("after", HELP_AFTER)
    .action(async (options: RateOptions) => {
      await runRate(options);
    });
}

/** A failure to report on stderr: one line per issue. */
class CliInputError extends Error {
  constructor(readonly lines: readonly string[]) {
    super(lines.join("\n"));
  }
}

async function readText(path: string, flag: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    const reason = err instanceof Error && "code" in err ? String(err.code) : String(err);
    throw new CliInputError([`${flag} ${path}: cannot read the file (${reason})`]);
  }
}

/** Runs a parser, prefixing its issues with the file they came from. */
function fromFile<T>(file: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof RatingInputError)
      throw new CliInputError(err.issues.map((i) => `${file}: ${formatIssue(i)}`));
    throw err;
  }
}

/** Maps the engine's input paths back to the files and flags the user wrote. */
function locate(
  issue: RatingIssue,
  files: { usage: string; subscription?: string },
  changeIndex: readonly number[],
): string {
  const { message } = issue;
  // One change in the file may become two engine changes (plan, then seats): map indexes back.
  const path = issue.path.replace(
    /^changes\[(\d+)\]/,
    (_, k: string) => `changes[${changeIndex[Number(k)] ?? k}]`,
  );
  const strip = (prefix: string) => path.slice(prefix.length).replace(/^\./, "");
  if (path === "usage" || path.startsWith("usage.") || path.startsWith("usage[")) {
    return `${files.usage}: ${formatIssue({ path: strip("usage"), message })}`;
  }
  if (path.startsWith("changes") && files.subscription !== undefined) {
    return `${files.subscription}: ${formatIssue({ path, message })}`;
  }
  if (path === "seats") return `--seats (or "seats" in the subscription file): ${message}`;
  if (path === "subscriptionStart")
    return `--subscription-start (or "started_at" in the subscription file): ${message}`;
  if (path.startsWith("period.")) return `--period-${path === "period.start" ? "start" : "end"}: ${message}`;
  return formatIssue({ path, message });
}

/** The engine input, and for each engine change the index of the subscription-file change it came from. */
async function buildInput(options: RateOptions, changeIndex: number[]): Promise<RatingInput> {
  const [planText, usageText, subscriptionText] = await Promise.all([
    readText(options.plan, "--plan"),
    readText(options.usage, "--usage"),
    options.subscription === undefined ? undefined : readText(options.subscription, "--subscription"),
  ]);
  const catalog: Catalog = fromFile(options.plan, () => parseCatalog(planText));
  const usage = fromFile(options.usage, () => parseUsage(usageText));
  const subscription =
    subscriptionText === undefined || options.subscription === undefined
      ? undefined
      : fromFile(options.subscription, () => parseSubscription(subscriptionText));

  const planKey = options.planKey ?? subscription?.plan;
  const plan = compilePlan(fromFile(options.plan, () => selectPlan(catalog, planKey)));

  const changes: SubscriptionChange[] = [];
  const subscriptionFile = options.subscription ?? "--subscription";
  for (const [i, change] of (subscription?.changes ?? []).entries()) {
    if (change.plan === undefined && change.seats === undefined) {
      throw new CliInputError([`${subscriptionFile}: changes[${i}]: needs seats, plan, or both`]);
    }
    if (change.plan === undefined && change.usage !== undefined) {
      throw new CliInputError([`${subscriptionFile}: changes[${i}].usage: only a plan change carries usage`]);
    }
    if (change.plan !== undefined) {
      const next = fromFile(options.plan, () => selectPlan(catalog, change.plan));
      changes.push({ type: "plan", at: change.at, plan: compilePlan(next), usage: change.usage ?? {} });
      changeIndex.push(i);
    }
    if (change.seats !== undefined) {
      changes.push({ type: "seats", at: change.at, seats: change.seats });
      changeIndex.push(i);
    }
  }

  const period = resolvePeriod(plan, {
    ...(options.periodStart === undefined ? {} : { start: options.periodStart }),
    ...(options.periodEnd === undefined ? {} : { end: options.periodEnd }),
    now: new Date(),
  });

  const seats = options.seats ?? subscription?.seats;
  const subscriptionStart = options.subscriptionStart ?? subscription?.started_at;
  return {
    plan,
    usage,
    period,
    changes,
    ...(seats === undefined ? {} : { seats }),
    ...(subscriptionStart === undefined ? {} : { subscriptionStart }),
    ...(subscription?.ended_at === undefined ? {} : { subscriptionEnd: subscription.ended_at }),
  };
}

async function runRate(options: RateOptions): Promise<void> {
  try {
    let invoice: RatedInvoice;
    const changeIndex: number[] = [];
    try {
      invoice = rate(await buildInput(options, changeIndex));
    } catch (err) {
      if (!(err instanceof RatingInputError)) throw err;
      const files = {
        usage: options.usage,
        ...(options.subscription === undefined ? {} : { subscription: options.subscription }),
      };
      throw new CliInputError(err.issues.map((i) => locate(i, files, changeIndex)));
    }
    process.stdout.write(`${JSON.stringify(invoice, null, options.compact ? undefined : 2)}\n`);
  } catch (err) {
    if (err instanceof CliInputError) {
      process.stderr.write(`tally rate: invalid input\n${err.lines.map((l) => `  ${l}`).join("\n")}\n`);
    } else if (err instanceof RangeError) {
      process.stderr.write(`tally rate: ${err.message}\n`);
    } else {
      throw err;
    }
    process.exitCode = 1;
  }
}
