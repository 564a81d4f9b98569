import type { JetStreamClient } from "nats";
import type { InvoiceStore } from "../billing/index.js";
import { busNames } from "../bus/index.js";
import type { Config } from "../config/index.js";
import { createStripeClient, PushStore } from "../connectors/stripe/index.js";
import type { Logger } from "../observability/index.js";
import type { WebhookEmitter } from "../webhooks/emitter.js";
import type { JournalReader } from "./journal.js";
import { documentsOfMonth, monthRange, reconcile, type ReconcileReport } from "./reconcile.js";

/** Reconciliation as a process runs it (`tally reconcile`, the close role's scheduled run). */
export interface Reconciler {
  run(month: string): Promise<ReconcileReport>;
  stop(): void;
}

/**
 * Opens what reconciliation reads: the invoice summaries (followed), the Stripe push records and
 * the Stripe API when TALLY_STRIPE_SECRET_KEY is set, the journal when accounts are configured.
 */
export async function openReconciler(deps: {
  js: JetStreamClient;
  invoices: InvoiceStore;
  config: Config;
  log: Logger;
  /** Null when the catalog has no `accounts:` section (no journal to compare). */
  journal: { reader: JournalReader; receivable: string } | null;
  timeZone: string;
  emitter?: WebhookEmitter | undefined;
}): Promise<Reconciler> {
  const { config } = deps;
  const index = await deps.invoices.index();
  const stripe = config.stripe.secretKey === undefined ? null : createStripeClient(config.stripe).stripe;
  const push =
    stripe === null
      ? null
      : await PushStore.open(deps.js, busNames(config.nats.prefix).pushBucket, config.nats.replicas);
  return {
    async run(month) {
      const { start } = monthRange(month, deps.timeZone);
      const report = await reconcile(
        {
          documents: documentsOfMonth(index.values(), month, deps.timeZone),
          exists: (id) => index.has(id),
          push,
          stripe,
          journal: deps.journal?.reader ?? null,
          receivable: deps.journal?.receivable ?? "",
          emitter: deps.emitter,
          since: start.toJSDate(),
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
