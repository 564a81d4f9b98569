import { createHash } from "node:crypto";
import type { JetStreamClient, KV, KvEntry } from "nats";
import pMap from "p-map";
import { watchLoaded } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";
import type { DocumentKind, Invoice } from "./invoice.js";

/** The id of the invoice of one subscription period: the same on every run of the close. */
export function invoiceId(subscription: string, periodStart: string): string {
  const h = createHash("sha256").update(`${subscription}\u0000${periodStart}`).digest("hex");
  return `inv_${h.slice(0, 24)}`;
}

/** `TALLY-000042`: prefix, dash, the number zero-padded to at least six digits. */
export function formatNumber(prefix: string, n: number): string {
  return `${prefix}-${String(n).padStart(6, "0")}`;
}

/** The numbering record of one issuer prefix: the last number used and a batch being applied. */
interface Numbering {
  last: number;
  /** Numbers claimed for these drafts; each is finalized with its number before the list is cleared. */
  pending: { id: string; number: number }[];
}

/**
 * KV operations a bulk call keeps in flight at once: one at a time, a close of 100,000 invoices
 * would wait on ~500,000 sequential round trips.
 */
const bulkConcurrency = 64;

/** Thrown when a compare-and-set lost to another writer; callers re-read and retry. */
export class InvoiceConflict extends Error {
  override name = "InvoiceConflict";
}

/** Fault injection for crash tests (never set in production). */
export interface InvoiceStoreFaults {
  /** Called after numbers were claimed and `finalized` invoices were written (0 = right after the claim). */
  afterFinalized?: (finalizedSoFar: number) => void;
  /** Called before a draft is stored (tests: fail for some drafts only; drafts are stored concurrently). */
  beforeDraft?: (draft: Invoice) => void;
  /** Called after each draft was stored, with how many so far. */
  afterDraft?: (draftsSoFar: number) => void;
}

/**
 * Invoices in a NATS KV bucket (`<prefix>_invoices`), one key per invoice (`invoices.<id>`),
 * every state change a compare-and-set on the revision read, so two writers can never both move
 * an invoice. Why KV: the close needs per-document compare-and-set and read-your-write, which
 * JetStream KV gives with the durability of the event stream (see src/billing/README.md).
 *
 * Numbers are gapless per issuer prefix. `numbering.<prefix>` holds the last number used and the
 * batch being finalized: claiming numbers and recording which draft gets which is ONE
 * compare-and-set, and the batch is cleared only after every draft in it was finalized with its
 * number. A crash anywhere leaves either nothing claimed, or a recorded batch that the next
 * finalization (by any process) completes first: no number is skipped, none is used twice.
 */
export class InvoiceStore {
  private draftsStored = 0;
  /** Summaries this process follows (see {@link follow}); null until then. */
  private known: Set<string> | null = null;

  private constructor(
    private readonly kv: KV,
    private readonly log: Logger | undefined,
    private readonly faults: InvoiceStoreFaults,
  ) {}

  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    log?: Logger,
    faults: InvoiceStoreFaults = {},
  ): Promise<InvoiceStore> {
    const kv = await js.views.kv(bucket, { history: 5, replicas });
    return new InvoiceStore(kv, log, faults);
  }

  async get(id: string): Promise<Invoice | null> {
    const e = await this.kv.get(`invoices.${id}`);
    return e === null || e.operation !== "PUT" ? null : e.json<Invoice>();
  }

  /**
   * Follows the invoice summaries from now on, so {@link find} can answer "no such invoice"
   * without a round trip (the close asks that for every subscription period it considers).
   * Summaries this process writes are seen at once (read-your-writes).
   */
  async follow(): Promise<void> {
    if (this.known !== null) return;
    const known = new Set<string>();
    // Keys only (headers_only): the close writes every summary it follows twice per invoice,
    // and decoding them back cost more than the reads this saves.
    await watchLoaded(
      this.kv,
      { key: "summaries.>", headersOnly: true },
      (e) => {
        const id = e.key.slice("summaries.".length);
        if (e.operation === "PUT") known.add(id);
        else known.delete(id);
      },
      "invoice summaries watch",
      { reset: () => known.clear(), ...(this.log ? { log: this.log } : {}) },
    );
    this.known = known;
  }

  /**
   * {@link get}, skipping the read when the followed summaries show no such invoice. A crash
   * between an invoice and its summary can hide a stored invoice from this check; callers must
   * (and the close does) treat "not found" as "build it": {@link putDraft} then finds the stored
   * one (a finalized invoice is returned unchanged) and the next write restores its summary.
   */
  async find(id: string): Promise<Invoice | null> {
    if (this.known !== null && !this.known.has(id)) return null;
    return this.get(id);
  }

  /**
   * Stores a draft, or replaces a stored draft (a re-run close recomputes it); a finalized
   * invoice is returned unchanged: it never changes.
   */
  async putDraft(draft: Invoice): Promise<Invoice> {
    if (draft.status !== "draft" || draft.number !== null)
      throw new Error("putDraft takes a draft without a number");
    const key = `invoices.${draft.id}`;
    this.faults.beforeDraft?.(draft);
    if (this.known !== null && !this.known.has(draft.id)) {
      // Most drafts are new: create without reading first; if it exists after all, read below.
      const created = await this.kv.create(key, JSON.stringify(draft)).then(
        () => true,
        () => false, // stored already (its summary lost in a crash): the loop reads it
      );
      if (created) {
        await this.putSummary(draft);
        this.faults.afterDraft?.(++this.draftsStored);
        return draft;
      }
    }
    for (let attempt = 0; ; attempt++) {
      const e = await this.kv.get(key);
      const stored = e === null || e.operation !== "PUT" ? null : e.json<Invoice>();
      if (stored !== null && stored.status !== "draft") return stored;
      try {
        if (e === null) await this.kv.create(key, JSON.stringify(draft));
        else await this.kv.update(key, JSON.stringify(draft), e.revision);
        await this.putSummary(draft);
        this.faults.afterDraft?.(++this.draftsStored);
        return draft;
      } catch (err: unknown) {
        if (attempt >= 5) throw err;
      }
    }
  }

  /** {@link putDraft} for many drafts, several in flight at once; results in the order given. */
  putDrafts(drafts: readonly Invoice[]): Promise<Invoice[]> {
    return pMap(drafts, (d) => this.putDraft(d), { concurrency: bulkConcurrency });
  }

  /**
   * Finalizes drafts, giving each the next number of `prefix` (in the order given). Drafts
   * already finalized are left as they are. Resolves with the finalized invoices.
   */
  async finalize(ids: readonly string[], prefix: string, now = new Date()): Promise<Invoice[]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.finalizeOnce(ids, prefix, now);
      } catch (err: unknown) {
        if (!(err instanceof InvoiceConflict) || attempt >= 50) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 10 * (attempt + 1)));
      }
    }
  }

  private async finalizeOnce(ids: readonly string[], prefix: string, now: Date): Promise<Invoice[]> {
    const counterKey = `numbering.${prefixToken(prefix)}`;
    let entry = await this.kv.get(counterKey);
    if (entry !== null && readNumbering(entry).pending.length > 0) {
      await this.completeBatch(entry.revision, readNumbering(entry), prefix, now);
      entry = await this.kv.get(counterKey);
    }
    const counter = entry === null ? { last: 0, pending: [] } : readNumbering(entry);
    const unique = [...new Set(ids)];
    const stored = await pMap(unique, (id) => this.kv.get(`invoices.${id}`), {
      concurrency: bulkConcurrency,
    });
    const drafts: string[] = [];
    // Drafts as just read: finalizing writes on these revisions without reading them again (a
    // draft changed since fails the compare-and-set, and the retry reads everything afresh).
    const read = new Map<string, KvEntry>();
    const out = new Map<string, Invoice>();
    stored.forEach((e, i) => {
      const id = unique[i]!;
      if (e === null || e.operation !== "PUT") throw new Error(`no invoice ${id}`);
      const inv = e.json<Invoice>();
      if (inv.status === "draft") {
        drafts.push(id);
        read.set(id, e);
      } else out.set(id, inv);
    });
    if (drafts.length > 0) {
      const claimed: Numbering = {
        last: counter.last + drafts.length,
        pending: drafts.map((id, i) => ({ id, number: counter.last + 1 + i })),
      };
      // The claim: numbers and who gets them, in one compare-and-set.
      const rev = await this.cas(counterKey, entry, claimed);
      for (const inv of await this.completeBatch(rev, claimed, prefix, now, read)) out.set(inv.id, inv);
    }
    return ids.map((id) => out.get(id)).filter((inv): inv is Invoice => inv !== undefined);
  }

  /**
   * Finalizes every draft of a claimed batch with its number, then clears the batch; resolves
   * with the batch's invoices as finalized. `read`: entries read just before the claim.
   */
  private async completeBatch(
    revision: number,
    counter: Numbering,
    prefix: string,
    now: Date,
    read: ReadonlyMap<string, KvEntry> = new Map(),
  ): Promise<Invoice[]> {
    let done = 0;
    this.faults.afterFinalized?.(done);
    // Each draft of the batch has its number already; the order they are written in is free.
    const finalized = await pMap(
      counter.pending,
      async ({ id, number }): Promise<Invoice> => {
        const key = `invoices.${id}`;
        const e = read.get(id) ?? (await this.kv.get(key));
        if (e === null || e.operation !== "PUT")
          throw new Error(`invoice ${id} of a numbering batch is missing`);
        const inv = e.json<Invoice>();
        const want = formatNumber(prefix, number);
        if (inv.status === "draft") {
          const finalized: Invoice = {
            ...inv,
            status: "finalized",
            number: want,
            finalized_at: now.toISOString(),
          };
          try {
            await this.kv.update(key, JSON.stringify(finalized), e.revision);
          } catch {
            throw new InvoiceConflict(`invoice ${id} changed while being finalized`);
          }
          await this.putSummary(finalized);
          this.log?.debug({ invoice: id, number: want }, "invoice finalized");
          this.faults.afterFinalized?.(++done);
          return finalized;
        } else if (inv.number === want) {
          await this.putSummary(inv); // a crash may have come between the invoice and its summary
          return inv;
        } else {
          // Only a batch finalizes; a batch lists each draft once. Anything else is a bug: stop loudly.
          throw new Error(`invoice ${id} is ${inv.status} with number ${inv.number}, batch says ${want}`);
        }
      },
      { concurrency: bulkConcurrency },
    );
    const cleared: Numbering = { last: counter.last, pending: [] };
    await this.cas(`numbering.${prefixToken(prefix)}`, { revision }, cleared);
    const first = counter.pending[0];
    if (first !== undefined) {
      this.log?.info(
        {
          invoices: counter.pending.length,
          first: formatNumber(prefix, first.number),
          last: formatNumber(prefix, counter.last),
        },
        "invoices finalized",
      );
    }
    return finalized;
  }

  private async cas(key: string, entry: { revision: number } | null, value: Numbering): Promise<number> {
    try {
      return entry === null
        ? await this.kv.create(key, JSON.stringify(value))
        : await this.kv.update(key, JSON.stringify(value), entry.revision);
    } catch {
      throw new InvoiceConflict(`${key} changed concurrently`);
    }
  }

  /** Every invoice id (unordered); for reconciliation. */
  async ids(): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys("invoices.*")) out.push(k.slice("invoices.".length));
    return out;
  }

  /**
   * The summary of an invoice (`summaries.<id>`), written after the invoice itself: a small
   * derived record that listings follow with a KV watch instead of reading every invoice. A
   * crash between the two leaves a stale summary until the next write of that invoice;
   * {@link InvoiceIndex} readers re-read the invoice itself when they need its state.
   */
  private async putSummary(inv: Invoice): Promise<void> {
    await this.kv.put(`summaries.${inv.id}`, JSON.stringify(summaryOf(inv)));
    this.known?.add(inv.id);
  }

  /**
   * Follows every invoice summary (for listings): resolves once the current ones are loaded.
   * The returned index stays current until `stop()`.
   */
  async index(): Promise<InvoiceIndex> {
    const index = new InvoiceIndex();
    const w = await watchLoaded(
      this.kv,
      { key: "summaries.>" },
      (e) => {
        if (e.operation === "PUT") index.set(e.json<InvoiceSummary>());
        else index.delete(e.key.slice("summaries.".length));
      },
      "invoice summaries watch",
      { reset: () => index.clear(), ...(this.log ? { log: this.log } : {}) },
    );
    index.stop = w.stop;
    return index;
  }
}

/** What listings show of an invoice. */
export interface InvoiceSummary {
  id: string;
  /** `invoice` or `credit_note` (summaries written before credit notes existed have none: invoices). */
  kind?: DocumentKind;
  number: string | null;
  status: Invoice["status"];
  customer: string;
  subscription: string;
  period_start: string;
  period_end: string;
  currency: string;
  total: number;
  finalized_at: string | null;
}

function summaryOf(inv: Invoice): InvoiceSummary {
  return {
    id: inv.id,
    kind: inv.kind ?? "invoice",
    number: inv.number,
    status: inv.status,
    customer: inv.customer,
    subscription: inv.subscription,
    period_start: inv.period.start,
    period_end: inv.period.end,
    currency: inv.currency,
    total: inv.total,
    finalized_at: inv.finalized_at,
  };
}

/** Filters of {@link InvoiceIndex.list}. */
export interface InvoiceFilter {
  customer?: string | undefined;
  kind?: DocumentKind | undefined;
  status?: Invoice["status"] | undefined;
  /** Only invoices whose period starts at this instant (ISO). */
  periodStart?: string | undefined;
}

/** Invoice summaries in memory, newest period first, for listings with cursor pagination. */
export class InvoiceIndex {
  private readonly byId = new Map<string, InvoiceSummary>();
  stop: () => void = () => undefined;

  set(s: InvoiceSummary): void {
    this.byId.set(s.id, s);
  }

  delete(id: string): void {
    this.byId.delete(id);
  }

  clear(): void {
    this.byId.clear();
  }

  get size(): number {
    return this.byId.size;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Every summary, in no particular order. */
  values(): IterableIterator<InvoiceSummary> {
    return this.byId.values();
  }

  /**
   * A page of summaries ordered by period start (newest first), then id. `after` is the last
   * summary of the previous page, as `{ period_start, id }` (the API encodes it as the cursor).
   */
  list(
    filter: InvoiceFilter,
    limit: number,
    after?: { period_start: string; id: string },
  ): { data: InvoiceSummary[]; next: { period_start: string; id: string } | null } {
    const match = [...this.byId.values()].filter(
      (s) =>
        (filter.customer === undefined || s.customer === filter.customer) &&
        (filter.kind === undefined || (s.kind ?? "invoice") === filter.kind) &&
        (filter.status === undefined || s.status === filter.status) &&
        (filter.periodStart === undefined || Date.parse(s.period_start) === Date.parse(filter.periodStart)),
    );
    match.sort((a, b) =>
      a.period_start === b.period_start ? cmp(a.id, b.id) : cmp(b.period_start, a.period_start),
    );
    let start = 0;
    if (after !== undefined) {
      start = match.findIndex(
        (s) =>
          s.period_start < after.period_start || (s.period_start === after.period_start && s.id > after.id),
      );
      if (start < 0) start = match.length;
    }
    const data = match.slice(start, start + limit);
    const last = data.at(-1);
    return {
      data,
      next:
        data.length === limit && start + limit < match.length && last
          ? { period_start: last.period_start, id: last.id }
          : null,
    };
  }
}

/** Code-unit order of two strings (the order of ids and ISO instants in listings). */
export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function readNumbering(e: KvEntry): Numbering {
  return e.json<Numbering>();
}

/** Issuer prefixes are validated at config time (`[A-Z0-9-]`); `.` would split the KV key. */
function prefixToken(prefix: string): string {
  return Buffer.from(prefix, "utf8").toString("base64url");
}
