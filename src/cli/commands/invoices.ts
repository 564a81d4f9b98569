import { InvalidArgumentError, type Command } from "commander";
import { InvoiceStore, type Invoice, type InvoiceSummary } from "../../billing/index.js";
import { busNames } from "../../bus/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";
import { describeInvoice, formatAmount } from "./close.js";

async function withInvoices<T>(fn: (store: InvoiceStore) => Promise<T>): Promise<T> {
  const config = configOrExit();
  const nc = await connectNats(config, "tally-invoices");
  try {
    const store = await InvoiceStore.open(
      nc.jetstream(),
      busNames(config.nats.prefix).invoicesBucket,
      config.nats.replicas,
    );
    return await fn(store);
  } finally {
    await nc.drain();
  }
}

function status(value: string): "draft" | "finalized" {
  if (value !== "draft" && value !== "finalized")
    throw new InvalidArgumentError("must be draft or finalized");
  return value;
}

function limit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 100_000)
    throw new InvalidArgumentError("must be an integer in [1, 100000]");
  return n;
}

function row(s: InvoiceSummary, exponent: (currency: string) => number): string {
  return [
    (s.number ?? "(draft)").padEnd(14),
    s.id,
    s.status.padEnd(9),
    s.period_start.slice(0, 19),
    `${formatAmount(s.total, exponent(s.currency))} ${s.currency}`.padStart(16),
    s.customer,
  ].join("  ");
}

export function registerInvoicesCommand(program: Command): void {
  const invoices = program.command("invoices").description("read the invoices the close produced");
  invoices
    .command("list")
    .description("invoices, newest period first (a table; --json for machines)")
    .option("--customer <key>", "only this customer's")
    .option("--status <status>", "draft or finalized", status)
    .option("--limit <n>", "at most this many", limit, 100)
    .option("--json", "print JSON")
    .action(
      async (opts: { customer?: string; status?: "draft" | "finalized"; limit: number; json?: boolean }) => {
        await withInvoices(async (store) => {
          const index = await store.index();
          try {
            const page = index.list({ customer: opts.customer, status: opts.status }, opts.limit);
            if (opts.json) {
              process.stdout.write(`${JSON.stringify(page.data, null, 2)}\n`);
              return;
            }
            // Exponents come from each invoice (a summary does not carry it): read those listed.
            const exps = new Map<string, number>();
            for (const s of page.data) {
              if (exps.has(s.currency)) continue;
              const inv = await store.get(s.id);
              if (inv !== null) exps.set(s.currency, inv.currency_exponent);
            }
            for (const s of page.data) process.stdout.write(`${row(s, (c) => exps.get(c) ?? 2)}\n`);
            process.stdout.write(
              `${page.data.length} invoice(s)${page.next ? " (more: raise --limit)" : ""}\n`,
            );
          } finally {
            index.stop();
          }
        });
      },
    );
  invoices
    .command("show <id>")
    .description("one invoice with its lines (--json for the full record: evidence, rating inputs, true-ups)")
    .option("--json", "print JSON")
    .action(async (id: string, opts: { json?: boolean }) => {
      const inv: Invoice | null = await withInvoices((store) => store.get(id));
      if (inv === null) {
        process.stderr.write(`no invoice ${id}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(opts.json ? `${JSON.stringify(inv, null, 2)}\n` : `${describeInvoice(inv)}\n`);
    });
}
