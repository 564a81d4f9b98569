/**
 * Benchmark dispatcher: `npm run bench -- <name> [args...]` runs `bench/<name>.ts`'s
 * `main(args)`. Benchmarks live here, never in the test run.
 */

/** Every benchmark, with what it measures (shown when the name is missing or unknown). */
const benches = {
  close:
    "the billing close of N subscriptions x 5 metered prices over >= 100M events (tally close --once), then again with a SIGKILL midway",
  ledger:
    "the sink's dedup-ledger lookup over a 40-day ledger of >= 100M ids, with and without the per-partition Bloom filter; filter build time and memory",
  journal:
    "journal posting of N finalized invoices (one postJournals round), an idle round, listing the month, the revenue report",
  ingest:
    "HTTP ingest (single events, 100-event batches) vs a bare-Hono baseline, JetStream -> ClickHouse end to end, edge RSS",
  push: "Stripe push against the local Stripe server: invoices/s at 25 and 100 req/s, and the bound on a close of 10k/100k customers",
  rating: "the pure rating engine: N customers x 5 metered prices, CPU time per run",
  sdk: "the Tally SDK client against a real edge (+ sink): acknowledged events/s, every event countable",
  xero: "Xero journal push against the local Xero server at Xero's limits (60 calls/min): journals per minute, calls per 60 s",
  webhooks:
    "outbound webhooks: signed deliveries/s outbox -> dispatcher -> local receiver vs raw undici POSTs, and 100k invoice.finalized into the outbox",
  usage:
    "the usage query path (queryUsage) on ClickHouse over >= 100M events: one customer's month p50/p99, all customers, vs bare SQL",
} as const;

type BenchName = keyof typeof benches;

function isBench(name: string | undefined): name is BenchName {
  return name !== undefined && Object.hasOwn(benches, name);
}

function usage(): string {
  const width = Math.max(...Object.keys(benches).map((n) => n.length));
  const lines = Object.entries(benches).map(([n, what]) => `  ${n.padEnd(width)}  ${what}`);
  return `usage: npm run bench -- <name> [args...]\n\navailable benches:\n${lines.join("\n")}\n`;
}

const [name, ...rest] = process.argv.slice(2);
if (name === "--help" || name === "-h") {
  process.stdout.write(usage());
} else if (!isBench(name)) {
  process.stderr.write(
    `${name === undefined ? "no bench named" : `unknown bench '${name}'`}; ` +
      `available: ${Object.keys(benches).join(", ")}\n\n${usage()}`,
  );
  process.exitCode = 2;
} else {
  try {
    const mod = (await import(`./${name}.js`)) as { main(args: string[]): Promise<void> };
    await mod.main(rest);
  } catch (err: unknown) {
    process.stderr.write(
      `bench ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  }
  // A bench cleans up after itself; this only bounds the exit if a stray handle lingers.
  setTimeout(() => process.exit(), 5000).unref();
}
