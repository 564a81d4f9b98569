import type { Command } from "commander";
import { KeyStore, scopes, type Scope } from "../../auth/index.js";
import { busNames } from "../../bus/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

async function withKeys<T>(fn: (keys: KeyStore) => Promise<T>): Promise<T> {
  const config = configOrExit();
  const nc = await connectNats(config, "tally-keys");
  try {
    const keys = await KeyStore.open(
      nc.jetstream(),
      busNames(config.nats.prefix).keysBucket,
      config.nats.replicas,
    );
    await keys.start();
    const out = await fn(keys);
    await keys.close();
    return out;
  } finally {
    await nc.drain();
  }
}

export function registerKeysCommand(program: Command): void {
  const keys = program.command("keys").description("manage API keys (stored hashed in NATS KV)");
  keys
    .command("create")
    .description("create a key; the key is printed once and never stored")
    .requiredOption("--name <name>", "a label for the key")
    .requiredOption("--scopes <list>", `comma-separated scopes: ${scopes.join(", ")}`)
    .action(async (opts: { name: string; scopes: string }) => {
      const list = opts.scopes.split(",").map((s) => s.trim());
      const bad = list.filter((s) => !(scopes as readonly string[]).includes(s));
      if (bad.length > 0) {
        process.stderr.write(`--scopes: unknown scope(s) ${bad.join(", ")}; use ${scopes.join(", ")}\n`);
        process.exitCode = 2;
        return;
      }
      const { key, record } = await withKeys((k) => k.create(opts.name, list as Scope[]));
      process.stdout.write(`${JSON.stringify({ key, ...record }, null, 2)}\n`);
    });
  keys
    .command("list")
    .description("list keys (ids, names, scopes; never the keys)")
    .action(async () => {
      const list = await withKeys((k) => Promise.resolve(k.list()));
      process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    });
  keys
    .command("revoke <id>")
    .description("revoke a key by id")
    .action(async (id: string) => {
      if (!(await withKeys((k) => k.revoke(id)))) {
        process.stderr.write(`no key with id ${id}\n`);
        process.exitCode = 1;
      }
    });
}
