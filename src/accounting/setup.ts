import type { JetStreamClient } from "nats";
import type { InvoiceStore, Snapshotter } from "../billing/index.js";
import { busNames } from "../bus/index.js";
import type { CatalogStore } from "../catalog/index.js";
import type { Config } from "../config/index.js";
import { PushStore } from "../connectors/stripe/index.js";
import type { Logger } from "../observability/index.js";
import { JournalPoster } from "./post.js";
import { JournalStore } from "./store.js";

/**
 * The close role's journal poster: the journal bucket, the Stripe payments records, and the
 * fault hook of crash tests (TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES; off in production).
 */
export async function openJournalPoster(o: {
  js: JetStreamClient;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  snapshots: Snapshotter;
  config: Config;
  log: Logger;
}): Promise<JournalPoster> {
  const names = busNames(o.config.nats.prefix);
  const crashAfter = o.config.accounting.crashAfterEntries;
  const journal = await JournalStore.open(
    o.js,
    names.journalBucket,
    o.config.nats.replicas,
    o.log,
    crashAfter > 0 ? { afterEntry: (n) => n === crashAfter && process.kill(process.pid, "SIGKILL") } : {},
  );
  return new JournalPoster({
    js: o.js,
    journal,
    invoices: o.invoices,
    catalog: o.catalog,
    push: await PushStore.open(o.js, names.pushBucket, o.config.nats.replicas),
    pushBucket: names.pushBucket,
    snapshots: o.snapshots,
    timezone: o.config.accounting.timezone,
    log: o.log,
  });
}
