import { readFileSync } from "node:fs";
import { InvalidArgumentError, type Command } from "commander";
import { busNames } from "../../bus/index.js";
import {
  CatalogInputError,
  CatalogStore,
  parseCatalogDocument,
  type CatalogLookup,
} from "../../catalog/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

async function withCatalog<T>(fn: (catalog: CatalogStore) => Promise<T>): Promise<T> {
  const config = configOrExit();
  const nc = await connectNats(config, "tally-catalog");
  try {
    const catalog = await CatalogStore.open(
      nc.jetstream(),
      busNames(config.nats.prefix).catalogBucket,
      config.nats.replicas,
      undefined,
      config.crashAfterCatalogClaim,
    );
    await catalog.start();
    const out = await fn(catalog);
    await catalog.close();
    return out;
  } finally {
    await nc.drain();
  }
}

/** Nothing stored: `--dry-run` checks references within the file only. */
const emptyCatalog: CatalogLookup = {
  meter: () => undefined,
  plan: () => undefined,
  customer: () => undefined,
  subscriptions: () => [],
};

const kinds = ["meters", "plans", "customers", "subscriptions"] as const;
type Kind = (typeof kinds)[number];

function kindOption(value: string): Kind {
  if (!(kinds as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`must be one of ${kinds.join(", ")}`);
  }
  return value as Kind;
}

function printIssues(file: string, err: CatalogInputError): void {
  process.stderr.write(
    `${file}: invalid catalog\n${err.issues.map((i) => `  ${i.path === "" ? "" : `${i.path}: `}${i.message}`).join("\n")}\n`,
  );
  process.exitCode = 2;
}

export function registerCatalogCommand(program: Command): void {
  const catalog = program
    .command("catalog")
    .description("manage the catalog: meters, plans, customers, subscriptions (versioned in NATS KV)");
  catalog
    .command("apply <file>")
    .description(
      "apply a YAML/JSON catalog file (any of meters:, plans:, customers:, subscriptions:); changed objects get a new version, others are left alone; references are checked against the file and the catalog",
    )
    .option("--dry-run", "validate the file (references within the file only) and print it without storing")
    .action(async (file: string, opts: { dryRun?: boolean }) => {
      const text = readFileSync(file, "utf8");
      if (opts.dryRun) {
        try {
          process.stdout.write(`${JSON.stringify(parseCatalogDocument(text, emptyCatalog), null, 2)}\n`);
        } catch (err: unknown) {
          if (!(err instanceof CatalogInputError)) throw err;
          printIssues(file, err);
        }
        return;
      }
      const results = await withCatalog(async (c) => {
        try {
          return await c.applyDocument(parseCatalogDocument(text, c.lookup()));
        } catch (err: unknown) {
          if (!(err instanceof CatalogInputError)) throw err;
          printIssues(file, err);
          return null;
        }
      });
      if (results !== null) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    });
  catalog
    .command("list")
    .description("list the current objects of one kind")
    .option("--kind <kind>", `one of ${kinds.join(", ")}`, kindOption, "meters" as Kind)
    .action(async (opts: { kind: Kind }) => {
      const list = await withCatalog((c) => Promise.resolve(c[opts.kind].list()));
      process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    });
  catalog
    .command("history <key>")
    .description("every version of a catalog object, oldest first")
    .option("--kind <kind>", `one of ${kinds.join(", ")}`, kindOption, "meters" as Kind)
    .action(async (key: string, opts: { kind: Kind }) => {
      const versions: unknown[] = await withCatalog((c): Promise<unknown[]> => c[opts.kind].history(key));
      if (versions.length === 0) {
        process.stderr.write(`no ${opts.kind.slice(0, -1)} with key ${key}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${JSON.stringify(versions, null, 2)}\n`);
    });
}
