import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { busNames } from "../../bus/index.js";
import { CatalogInputError, CatalogStore, parseMeters } from "../../catalog/index.js";
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

export function registerCatalogCommand(program: Command): void {
  const catalog = program
    .command("catalog")
    .description("manage the catalog of meters (versioned in NATS KV)");
  catalog
    .command("apply <file>")
    .description(
      "apply the meters: section of a YAML/JSON catalog file; changed meters get a new version, others are left alone",
    )
    .option("--dry-run", "validate the file and print the meters without storing them")
    .action(async (file: string, opts: { dryRun?: boolean }) => {
      let meters;
      try {
        meters = parseMeters(readFileSync(file, "utf8"));
      } catch (err: unknown) {
        if (err instanceof CatalogInputError) {
          process.stderr.write(
            `${file}: invalid catalog\n${err.issues.map((i) => `  ${i.path === "" ? "" : `${i.path}: `}${i.message}`).join("\n")}\n`,
          );
          process.exitCode = 2;
          return;
        }
        throw err;
      }
      if (opts.dryRun) {
        process.stdout.write(`${JSON.stringify(meters, null, 2)}\n`);
        return;
      }
      const results = await withCatalog((c) => c.apply(meters));
      process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    });
  catalog
    .command("list")
    .description("list the current meters")
    .action(async () => {
      const list = await withCatalog((c) => Promise.resolve(c.list()));
      process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    });
  catalog
    .command("history <meter>")
    .description("every version of a meter, oldest first")
    .action(async (key: string) => {
      const versions = await withCatalog((c) => c.history(key));
      if (versions.length === 0) {
        process.stderr.write(`no meter with key ${key}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`${JSON.stringify(versions, null, 2)}\n`);
    });
}
