import type { JetStreamClient } from "nats";
import pMap from "p-map";
import type { Invoice, InvoiceIndex, InvoiceStore, SnapshotRequest, Snapshotter } from "../billing/index.js";
import type { CatalogStore, Meter } from "../catalog/index.js";
import type { PushStore, StripePayments } from "../connectors/stripe/index.js";
import { watchLoaded } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";
import {
  dayIn,
  documentEntry,
  documentEntryId,
  JournalDerivationError,
  monthsOf,
  paymentEntry,
  paymentEntryId,
  recognitionEntries,
  recognitionEntryId,
} from "./derive.js";
import type { JournalEntry } from "./journal.js";
import type { JournalStore } from "./store.js";

/** What posting needs; built by the close role, the CLI, or tests. */
export interface PostDeps {
  js: JetStreamClient;
  journal: JournalStore;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  /** Stripe push records (payment amounts per part); absent: payments are not journalled. */
  push?: PushStore;
  /** The bucket holding `payments.<invoice>` (the push bucket). */
  pushBucket?: string;
  /** The close's usage reads (usage lines spanning months are split by each month's usage). */
  snapshots: Snapshotter;
  timezone: string;
  log: Logger;
  now?: () => number;
}

/** What one posting round did. */
export interface PostReport {
  /** False when the catalog has no `accounts:` section: nothing is journalled. */
  configured: boolean;
  posted: { invoice: number; credit_note: number; payment: number; recognition: number };
  /** Documents (or payments) that could not be journalled this round; retried next round. */
  errors: { document: string; code: string; message: string }[];
}

/** Documents derived per batch (bounded memory: each is read in full to derive it). */
const batchSize = 2000;

/**
 * Posts the journal after each close round: an entry for every finalized document without one,
 * a payment entry for every Stripe payment without one, and the recognition entries whose day
 * has come. Every entry id is deterministic and stored create-only, so a crash anywhere (or two
 * posters) leaves nothing twice, and the next round posts what is missing.
 *
 * `start()` follows the invoice summaries, the journal's entry ids and the payments records with
 * KV watches, so a round that has nothing to do reads nothing.
 */
export class JournalPoster {
  private index: InvoiceIndex | null = null;
  private readonly payments = new Map<string, StripePayments>();
  private stopPayments: (() => void) | null = null;
  /** Documents whose entry has no lines (all amounts 0): nothing to post, remembered per process. */
  private readonly empty = new Set<string>();
  private started: Promise<void> | null = null;

  constructor(private readonly deps: PostDeps) {}

  /** The journal this poster writes (others in the process read it rather than open a second watch). */
  get journal(): JournalStore {
    return this.deps.journal;
  }

  /** Opens the watches (once; {@link postDue} does it on its first configured round). */
  start(): Promise<void> {
    this.started ??= this.open().catch((err: unknown) => {
      this.started = null;
      throw err;
    });
    return this.started;
  }

  private async open(): Promise<void> {
    await this.deps.journal.follow();
    this.index = await this.deps.invoices.index();
    if (this.deps.push !== undefined && this.deps.pushBucket !== undefined) {
      const kv = await this.deps.js.views.kv(this.deps.pushBucket);
      const w = await watchLoaded(
        kv,
        { key: "payments.>" },
        (e) => {
          const id = e.key.slice("payments.".length);
          if (e.operation === "PUT") this.payments.set(id, e.json<StripePayments>());
          else this.payments.delete(id);
        },
        "payments watch",
        { reset: () => this.payments.clear(), log: this.deps.log },
      );
      this.stopPayments = w.stop;
    }
  }

  stop(): void {
    this.started = null;
    this.index?.stop();
    this.index = null;
    this.stopPayments?.();
    this.deps.journal.stop();
  }

  async postDue(): Promise<PostReport> {
    const report: PostReport = {
      configured: false,
      posted: { invoice: 0, credit_note: 0, payment: 0, recognition: 0 },
      errors: [],
    };
    const chart = this.deps.catalog.chart();
    // Without an accounts: section nothing is journalled, and nothing is followed either.
    if (chart === undefined) return report;
    await this.start();
    if (this.index === null) return report;
    report.configured = true;
    const { journal } = this.deps;
    const postedAt = () => new Date(this.now()).toISOString();
    const base = { timezone: this.deps.timezone, chart, chartVersion: chart.version };
    const fail = (document: string, err: unknown) => {
      if (!(err instanceof JournalDerivationError)) throw err;
      report.errors.push({ document, code: err.code, message: err.message });
      // Every round until fixed (a chart change): loud, but one line per document.
      this.deps.log.warn({ document, code: err.code, err: err.message }, "journal entry not posted");
    };

    // 1. Documents: invoices before credit notes (a credit note reverses what invoices booked).
    const summaries = this.index.list({ status: "finalized" }, Number.MAX_SAFE_INTEGER).data;
    const todo: string[] = [];
    for (const s of summaries) {
      if (this.empty.has(s.id)) continue;
      if (!(await journal.has(documentEntryId({ id: s.id, kind: s.kind ?? "invoice" })))) todo.push(s.id);
    }
    todo.sort((a, b) =>
      a.startsWith("cn_") === b.startsWith("cn_") ? (a < b ? -1 : 1) : a.startsWith("cn_") ? 1 : -1,
    );
    for (let i = 0; i < todo.length; i += batchSize) {
      const docs = (
        await pMap(todo.slice(i, i + batchSize), (id) => this.deps.invoices.get(id), { concurrency: 64 })
      ).filter((d): d is Invoice => d !== null && d.status === "finalized");
      const usage = await this.usageByMonth(docs);
      const entries: JournalEntry[] = [];
      for (const doc of docs) {
        try {
          const e = documentEntry(doc, { ...base, usageByMonth: usage.get(doc.id), postedAt: postedAt() });
          if (e.lines.length === 0) this.empty.add(doc.id);
          else entries.push(e);
        } catch (err: unknown) {
          fail(doc.id, err);
        }
      }
      for (const id of await journal.post(entries)) {
        const e = entries.find((x) => x.id === id)!;
        report.posted[e.kind]++;
      }
    }

    // 2. Payments recorded from Stripe's webhooks.
    if (this.deps.push !== undefined) {
      const due: { invoice: string; stripe: string; p: StripePayments["parts"][string] }[] = [];
      for (const [invoice, rec] of this.payments) {
        for (const [stripe, p] of Object.entries(rec.parts)) {
          if (p.status === "paid" && !(await journal.has(paymentEntryId(invoice, stripe))))
            due.push({ invoice, stripe, p });
        }
      }
      const entries = (
        await pMap(
          due,
          async ({ invoice, stripe, p }) => {
            const [doc, push] = await Promise.all([
              this.deps.invoices.get(invoice),
              this.deps.push!.get(invoice),
            ]);
            if (doc === null) return null;
            const part = push?.parts.find((x) => x.stripe_invoice === stripe);
            // What Stripe says was paid; records written before it was kept fall back to the total.
            const amount =
              p.amount_paid ??
              part?.stripe_total ??
              (push === null || push.parts.length <= 1 ? doc.total : null);
            if (amount === null) {
              report.errors.push({
                document: invoice,
                code: "payment_amount_unknown",
                message: `Stripe invoice ${stripe} is paid but not in the push record's parts`,
              });
              return null;
            }
            // Nothing was received (a credit note covered the invoice before it was paid).
            if (amount === 0) return null;
            const pay = { stripe_invoice: stripe, event: p.event, event_created: p.event_created, amount };
            return paymentEntry(doc, pay, { ...base, postedAt: postedAt() });
          },
          { concurrency: 64 },
        )
      ).filter((e): e is JournalEntry => e !== null);
      report.posted.payment += (await journal.post(entries)).length;
    }

    // 3. Recognitions whose day (the last day of the service month) has come.
    const today = dayIn(this.now(), this.deps.timezone);
    const recognitions: JournalEntry[] = [];
    for (const d of await journal.deferrals()) {
      if (!d.days.some((day) => day <= today)) continue;
      const docEntry = await journal.get(d.entry);
      if (docEntry === null) continue; // its index was written, the entry not yet: posted next round
      for (const r of recognitionEntries(docEntry, postedAt())) {
        if (r.date <= today && !(await journal.has(recognitionEntryId(docEntry.document, r.date))))
          recognitions.push(r);
      }
    }
    report.posted.recognition += (await journal.post(recognitions)).length;
    return report;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /**
   * Usage lines spanning calendar months: each month's quantity, read through the close's
   * snapshot path with the invoice's recorded cutoff (so the split matches what was billed). A
   * true-up line is split by the usage that arrived after its original invoice's cutoff.
   */
  private async usageByMonth(docs: readonly Invoice[]): Promise<Map<string, Map<number, string[]>>> {
    const requests: SnapshotRequest[] = [];
    const wants: { doc: string; line: number; at: number[]; minus: number[] }[] = [];
    const meters = new Map<string, Promise<Meter | undefined>>();
    const meterOf = (key: string, version: number | undefined) => {
      const k = `${key}\u0000${version ?? ""}`;
      let m = meters.get(k);
      if (m === undefined) {
        m =
          version === undefined
            ? Promise.resolve(this.deps.catalog.meters.get(key))
            : this.deps.catalog.meters.version(key, version);
        meters.set(k, m);
      }
      return m;
    };
    const cutoffs = new Map<string, Promise<number | undefined>>();
    const cutoffOf = (id: string) => {
      let c = cutoffs.get(id);
      if (c === undefined) {
        c = this.deps.invoices.get(id).then((inv) => (inv === null ? undefined : Date.parse(inv.cutoff)));
        cutoffs.set(id, c);
      }
      return c;
    };
    for (const doc of docs) {
      for (const line of doc.lines) {
        if (line.kind !== "usage" || line.meter === null || line.amount === 0) continue;
        const months = monthsOf(line.period, this.deps.timezone);
        if (months.length < 2) continue;
        const meter = await meterOf(line.meter, line.snapshot?.meter_version);
        if (meter === undefined) continue; // split by time
        const cutoffMs = Date.parse(doc.cutoff);
        const earlier = line.true_up !== undefined ? await cutoffOf(line.true_up.invoice) : undefined;
        const want = { doc: doc.id, line: line.number, at: [] as number[], minus: [] as number[] };
        for (const m of months) {
          want.at.push(requests.length);
          requests.push({ meter, customer: doc.customer, fromMs: m.fromMs, toMs: m.toMs, cutoffMs });
          if (earlier !== undefined) {
            want.minus.push(requests.length);
            requests.push({
              meter,
              customer: doc.customer,
              fromMs: m.fromMs,
              toMs: m.toMs,
              cutoffMs: earlier,
            });
          }
        }
        wants.push(want);
      }
    }
    const out = new Map<string, Map<number, string[]>>();
    if (requests.length === 0) return out;
    const snaps = await this.deps.snapshots.snapshot(requests);
    for (const w of wants) {
      const q = w.at.map((i, k) => {
        const now = snaps[i]!.quantity;
        return w.minus.length === 0 ? now : subtractDecimal(now, snaps[w.minus[k]!]!.quantity);
      });
      let m = out.get(w.doc);
      if (m === undefined) out.set(w.doc, (m = new Map<number, string[]>()));
      m.set(w.line, q);
    }
    return out;
  }
}

/** `a − b` of two exact decimal strings (quantities), exact. */
function subtractDecimal(a: string, b: string): string {
  const scale = Math.max(a.split(".")[1]?.length ?? 0, b.split(".")[1]?.length ?? 0);
  const toInt = (s: string) => {
    const neg = s.startsWith("-");
    const [i, f = ""] = (neg ? s.slice(1) : s).split(".");
    const v = BigInt(`${i}${f.padEnd(scale, "0")}`);
    return neg ? -v : v;
  };
  const d = toInt(a) - toInt(b);
  const neg = d < 0n;
  const digits = (neg ? -d : d).toString().padStart(scale + 1, "0");
  const body = scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  return `${neg ? "-" : ""}${body}`;
}

/** One posting round with its own watches (the CLI, tests); the close role keeps a poster open. */
export async function postJournals(deps: PostDeps): Promise<PostReport> {
  const poster = new JournalPoster(deps);
  await poster.start();
  try {
    return await poster.postDue();
  } finally {
    poster.stop();
  }
}
