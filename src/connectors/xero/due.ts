import pMap from "p-map";
import type { JournalEntry, JournalStore } from "../../accounting/index.js";
import type { Logger } from "../../observability/index.js";
import { emptyPushReport, type XeroPushReport, type XeroPusher } from "./push.js";
import type { XeroStore } from "./store.js";

/** Entries read and pushed per `pushJournals` call (bounds memory; Xero takes 50 per request). */
const chunk = 5000;

/**
 * What the close role and `tally push xero` run: every posted journal entry that Xero has not
 * settled (pushed, or refused for good) is pushed. Both sets are followed with KV watches, so a
 * run with nothing new reads nothing; entries are read only when they need a push.
 */
export class XeroDuePusher {
  private settled: ReadonlySet<string> | null = null;
  private stopSettled: (() => void) | null = null;

  constructor(
    private readonly deps: { journal: JournalStore; store: XeroStore; pusher: XeroPusher; log: Logger },
  ) {}

  /** Pushes what is due; resolves with the summed report of the calls it made. */
  async pushDue(): Promise<XeroPushReport & { due: number }> {
    const { journal, store, pusher } = this.deps;
    await journal.follow();
    if (this.settled === null) {
      const s = await store.followSettled(this.deps.log);
      this.settled = s.settled;
      this.stopSettled = s.stop;
    }
    const settled = this.settled;
    const due = [...journal.knownIds()].filter((id) => !settled.has(id)).sort();
    const total: XeroPushReport & { due: number } = { ...emptyPushReport(), due: due.length };
    // One call even with nothing due: it finishes a batch a killed run left open.
    for (let i = 0; i === 0 || i < due.length; i += chunk) {
      const entries = (
        await pMap(due.slice(i, i + chunk), (id) => journal.get(id), { concurrency: 64 })
      ).filter((e): e is JournalEntry => e !== null);
      const r = await pusher.pushJournals(entries);
      total.pushed += r.pushed;
      total.alreadyPushed += r.alreadyPushed;
      total.failed.push(...r.failed);
      total.deferred += r.deferred;
      total.requests += r.requests;
      total.lookups += r.lookups;
      total.elapsedMs += r.elapsedMs;
      // The day's call budget is spent: the rest waits for the next run.
      if (r.deferred > 0 && r.pushed === 0) break;
    }
    return total;
  }

  stop(): void {
    this.stopSettled?.();
    this.stopSettled = null;
    this.settled = null;
  }
}
