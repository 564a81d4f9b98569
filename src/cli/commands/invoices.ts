import { InvalidArgumentError, type Command } from "commander";
import { InvoiceStore, type DocumentKind, type Invoice, type InvoiceSummary } from "../../billing/index.js";
import { busNames } from "../../bus/index.js";
import { PushStore, type StripePayments, type StripePush } from "../../connectors/stripe/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";
import { minorToDecimal } from "../../rating/index.js";
import { describeInvoice } from "./close.js";

async function withInvoices<T>(fn: (store: InvoiceStore, push: PushStore) => Promise<T>): Promise<T> {
  const config = configOrExit();
  const nc = await connectNats(config, "tally-invoices");
  try {
    const names = busNames(config.nats.prefix);
    const store = await InvoiceStore.open(nc.jetstream(), names.invoicesBucket, config.nats.replicas);
    const push = await PushStore.open(nc.jetstream(), names.pushBucket, config.nats.replicas);
    return await fn(store, push);
  } finally {
    await nc.drain();
  }
}

/** Invoice statuses, and push statuses (`push_failed`, `mismatch`, ...) of the Stripe push. */
const pushStatuses = ["pending", "pushed", "push_failed", "mismatch", "skipped"] as const;
type ListStatus = "draft" | "finalized" | (typeof pushStatuses)[number];

function kind(value: string): DocumentKind {
  if (value === "invoice" || value === "credit_note") return value;
  throw new InvalidArgumentError("must be invoice or credit_note");
}

function status(value: string): ListStatus {
  if (value === "draft" || value === "finalized") return value;
  if ((pushStatuses as readonly string[]).includes(value)) return value as ListStatus;
  throw new InvalidArgumentError(`must be draft, finalized, or a push status (${pushStatuses.join(", ")})`);
}

/** The push lines of `invoices show`. */
function describePush(rec: StripePush | null, pay: StripePayments | null): string {
  if (rec === null && pay === null) return "stripe: not pushed";
  const out = [
    `stripe: ${rec?.status ?? "pending"} (step ${rec?.step ?? "none"}, attempts ${rec?.attempts ?? 0})`,
  ];
  for (const p of rec?.parts ?? []) {
    const paid = p.stripe_invoice !== null ? pay?.parts[p.stripe_invoice]?.status : undefined;
    out.push(
      `  part ${p.part}: ${p.stripe_invoice ?? "(not created)"}  ${p.stripe_status ?? "-"}  total ${p.stripe_total ?? "-"} (tally ${p.expected_total})${paid ? `  payment ${paid}` : ""}`,
    );
  }
  if (rec?.last_error) out.push(`  last error: ${rec.last_error.code}: ${rec.last_error.message}`);
  if (rec?.next_attempt_at && rec.status === "push_failed")
    out.push(`  next attempt: ${rec.next_attempt_at}`);
  if (rec?.skip_reason) out.push(`  skipped: ${rec.skip_reason}`);
  return out.join("\n");
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
    `${minorToDecimal(s.total, exponent(s.currency))} ${s.currency}`.padStart(16),
    s.customer,
  ].join("  ");
}

export function registerInvoicesCommand(program: Command): void {
  const invoices = program.command("invoices").description("read the invoices the close produced");
  invoices
    .command("list")
    .description("invoices, newest period first (a table; --json for machines)")
    .option("--customer <key>", "only this customer's")
    .option(
      "--status <status>",
      "draft, finalized, or a Stripe push status (push_failed, mismatch, ...)",
      status,
    )
    .option("--kind <kind>", "invoice or credit_note (default: both)", kind)
    .option("--limit <n>", "at most this many", limit, 100)
    .option("--json", "print JSON")
    .action(
      async (opts: {
        customer?: string;
        status?: ListStatus;
        kind?: DocumentKind;
        limit: number;
        json?: boolean;
      }) => {
        await withInvoices(async (store, push) => {
          if (opts.status !== undefined && opts.status !== "draft" && opts.status !== "finalized") {
            const want = opts.status;
            const recs = (await push.all())
              .filter(
                (r) =>
                  r.status === want &&
                  (opts.customer === undefined || r.customer === opts.customer) &&
                  (opts.kind === undefined || (r.kind ?? "invoice") === opts.kind),
              )
              .slice(0, opts.limit);
            if (opts.json) {
              process.stdout.write(`${JSON.stringify(recs, null, 2)}\n`);
              return;
            }
            for (const r of recs) {
              const err = r.last_error ? `  ${r.last_error.code}: ${r.last_error.message}` : "";
              process.stdout.write(
                `${(r.number ?? "").padEnd(14)}  ${r.invoice}  ${r.status.padEnd(11)}  ${r.customer}${err}\n`,
              );
            }
            process.stdout.write(`${recs.length} invoice(s)\n`);
            return;
          }
          const index = await store.index();
          try {
            const page = index.list(
              { customer: opts.customer, status: opts.status, kind: opts.kind },
              opts.limit,
            );
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
      const [inv, rec, pay] = await withInvoices(
        async (store, push) =>
          [await store.get(id), await push.get(id), await push.payments(id)] as [
            Invoice | null,
            StripePush | null,
            StripePayments | null,
          ],
      );
      if (inv === null) {
        process.stderr.write(`no invoice ${id}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        opts.json
          ? `${JSON.stringify({ ...inv, push: { stripe: rec, stripe_payments: pay } }, null, 2)}\n`
          : `${describeInvoice(inv)}\n${describePush(rec, pay)}\n`,
      );
    });
}
