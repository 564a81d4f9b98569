import type { JetStreamClient } from "nats";
import type { InvoiceStore } from "../billing/index.js";
import { busNames } from "../bus/index.js";
import type { CatalogStore } from "../catalog/index.js";
import type { Config } from "../config/index.js";
import { createStripeClient, PushStore } from "../connectors/stripe/index.js";
import type { Logger } from "../observability/index.js";
import type { WebhookEmitter } from "../webhooks/emitter.js";
import { JournalStore } from "./store.js";
import { documentsOfMonth, monthRange, reconcile, type ReconcileReport } from "./reconcile.js";

/** Reconciliation as a process runs it (`tally reconcile`, the close role's scheduled run). */
export interface Reconciler {
  run(month: string): Promise<ReconcileReport>;
  stop(): void;
}

/**
 * Opens what reconciliation reads: the invoice summaries (followed), the Stripe push records and
 * the Stripe API when TALLY_STRIPE_SECRET_KEY is set, the journal when the catalog has an
 * `accounts:` section (read at each run). Documents are assigned to months by their accounting
 * date in TALLY_ACCOUNTING_TIMEZONE, as the journal dates them.
 */
export async function openReconciler(deps: {
  js: JetStreamClient;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  config: Config;
  log: Logger;
  emitter?: WebhookEmitter | undefined;
}): Promise<Reconciler> {
  const { config } = deps;
  const timeZone = config.accounting.timezone;
  const names = busNames(config.nats.prefix);
  const index = await deps.invoices.index();
  const journal = await JournalStore.open(deps.js, names.journalBucket, config.nats.replicas, deps.log);
  const stripe = config.stripe.secretKey === undefined ? null : createStripeClient(config.stripe).stripe;
  const push = stripe === null ? null : await PushStore.open(deps.js, names.pushBucket, config.nats.replicas);
  return {
    async run(month) {
      const { start, end } = monthRange(month, timeZone);
      const chart = deps.catalog.chart();
      const report = await reconcile(
        {
          documents: documentsOfMonth(index.values(), month, timeZone),
          exists: (id) => index.has(id),
          push,
          stripe,
          journal: chart === undefined ? null : journal,
          receivable: chart?.receivable ?? "",
          draftsExpected: !config.stripe.finalize,
          emitter: deps.emitter,
          since: start.toJSDate(),
          until: end.toJSDate(),
          settleMs: config.reconcile.settleMs,
        },
        month,
      );
      deps.log.info(
        { month, documents: report.documents, differences: report.differences.length },
        "reconciliation",
      );
      return report;
    },
    stop: () => index.stop(),
  };
}
