import type { WebhookEmitter } from "../../webhooks/emitter.js";
import { invoicePushed, invoicePushFailed } from "../../webhooks/events.js";
import pMap from "p-map";
import type Stripe from "stripe";
import type { Invoice, InvoiceStore } from "../../billing/index.js";
import type { CatalogStore } from "../../catalog/index.js";
import type { StripeConfig } from "../../config/index.js";
import type { Logger } from "../../observability/index.js";
import { backoffMs } from "../../sdk/retry.js";
import { callStripe, StripeCallError, type StripeClient } from "./client.js";
import { pushOutcomes, pushSeconds, stripeRetries } from "./metrics.js";
import {
  collectionOf,
  createParams,
  lineParams,
  planPush,
  pushKey,
  type PartPlan,
  type PushPlan,
} from "./plan.js";
import {
  CreditPlanError,
  creditNoteKey,
  creditNoteParams,
  planCreditNote,
  type PartRoom,
} from "./credit-notes.js";
import type { CreditNotePush, PushPart, PushStore, StripePush } from "./push-store.js";

/**
 * Stripe may prune an idempotency key once it is 24 h old (https://docs.stripe.com/idempotency).
 * Every create of a part happens after the Tally invoice was finalized, so while the invoice is
 * younger than this, a lost push record is harmless: the create's deterministic key replays the
 * Stripe invoice made before. Older invoices are looked up by metadata first (search becomes
 * consistent within a minute, https://docs.stripe.com/search). An hour of margin for clock skew.
 */
const searchAfterMs = 23 * 3_600_000;

/** `last_error.code` of a credit note waiting for a credited invoice to be pushed (status `pending`). */
const waitingCode = "waiting_for_credited_invoice";

export interface PushDeps {
  invoices: InvoiceStore;
  catalog: CatalogStore;
  store: PushStore;
  client: StripeClient;
  config: StripeConfig;
  log: Logger;
  now?: () => number;
  /** Fault injection for crash tests (TALLY_FAULT_STRIPE_CRASH_AT); called at named points. */
  crashPoint?: (point: string) => void;
  /** Raises `invoice.pushed` / `invoice.push_failed` (src/webhooks); unset: none. */
  webhooks?: WebhookEmitter;
}

export interface PushReport {
  pushed: string[];
  failed: { invoice: string; code: string; message: string }[];
  mismatched: string[];
  skipped: { invoice: string; reason: string }[];
  /** Failed earlier and not due for another attempt yet. */
  backingOff: number;
  /** Credit notes waiting for a credited invoice to be pushed (looked at again on every run). */
  waiting: string[];
}

/** A per-invoice failure with a stable code (shown as `last_error.code`). */
class PushError extends Error {
  override name = "PushError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The push's own view of a Stripe invoice after a request. */
interface Seen {
  status: string | null;
  total: number;
  number: string | null;
}

function seen(inv: Stripe.Invoice): Seen {
  return { status: inv.status, total: inv.total, number: inv.number };
}

/**
 * Pushes finalized Tally invoices to Stripe Invoicing. Per invoice and per part (see plan.ts): a
 * draft is created (`auto_advance: false`, so Stripe never advances it behind our back), its lines
 * added in chunks, it is finalized when configured, and Stripe's totals are compared with Tally's.
 *
 * Never twice: each step is recorded in the push record (PushStore) as soon as Stripe answered,
 * and every write to Stripe carries a deterministic idempotency key (`tally:<invoice>:<step>:<part>[.<chunk>]`).
 * A crash between Stripe's answer and the record leaves a step that the next run repeats with the
 * same key, and Stripe answers with the first result instead of acting again. A resumed part is
 * reconciled with Stripe first (its status and which lines it holds), so a resumed push never
 * depends on a key still being remembered.
 */
export class StripePusher {
  private readonly now: () => number;

  constructor(private readonly deps: PushDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * Pushes every finalized invoice not pushed yet (or `only` these ids), failed ones once their
   * backoff has passed (`force`: now). Failures are per invoice; the others go on.
   */
  async pushDue(opts: { only?: readonly string[]; force?: boolean } = {}): Promise<PushReport> {
    let ids: string[];
    if (opts.only !== undefined) ids = [...opts.only];
    else {
      const index = await this.deps.invoices.index();
      try {
        ids = index.list({ status: "finalized" }, Number.MAX_SAFE_INTEGER).data.map((s) => s.id);
      } finally {
        index.stop();
      }
    }
    const records = new Map((await this.deps.store.all()).map((r) => [r.invoice, r]));
    const report: PushReport = {
      pushed: [],
      failed: [],
      mismatched: [],
      skipped: [],
      backingOff: 0,
      waiting: [],
    };
    const due = ids.filter((id) => {
      const r = records.get(id);
      if (r === undefined || r.status === "pending" || legacyCreditSkip(r)) return true;
      if (r.status !== "push_failed") return false;
      if (opts.force || r.next_attempt_at === null || Date.parse(r.next_attempt_at) <= this.now())
        return true;
      report.backingOff++;
      return false;
    });
    const one = async (id: string) => {
      const r = await this.pushOne(id);
      if (r === null) return;
      switch (r.status) {
        case "pushed":
          report.pushed.push(id);
          break;
        case "push_failed":
          report.failed.push({
            invoice: id,
            code: r.last_error?.code ?? "unknown",
            message: r.last_error?.message ?? "",
          });
          break;
        case "mismatch":
          report.mismatched.push(id);
          break;
        case "skipped":
          report.skipped.push({ invoice: id, reason: r.skip_reason ?? "" });
          break;
        case "pending":
          if (r.last_error?.code === waitingCode) report.waiting.push(id);
          break;
      }
    };
    // Invoices first, then credit notes (ids from creditNoteId: `cn_…`), so a credit note and the
    // invoice it credits, finalized in the same round, go out in one run. Credit notes one at a
    // time: each is planned from what its Stripe invoices can still take, which another credit
    // note on the same invoice changes.
    const isCredit = (id: string) => id.startsWith("cn_");
    await pMap(
      due.filter((id) => !isCredit(id)),
      one,
      { concurrency: this.deps.config.concurrency },
    );
    for (const id of due.filter(isCredit)) await one(id);
    return report;
  }

  /** Pushes one invoice as far as it goes; resolves with its push record (null: no such finalized invoice). */
  async pushOne(id: string): Promise<StripePush | null> {
    const inv = await this.deps.invoices.get(id);
    if (inv === null || inv.status !== "finalized") return null;
    const existing = await this.deps.store.get(id);
    if (
      existing !== null &&
      ["pushed", "mismatch", "skipped"].includes(existing.status) &&
      !legacyCreditSkip(existing)
    )
      return existing;
    const started = performance.now();
    try {
      return await this.announce(inv, await this.push(inv, existing));
    } catch (err: unknown) {
      const code =
        err instanceof PushError || err instanceof StripeCallError || err instanceof CreditPlanError
          ? err.code
          : "internal";
      const message = err instanceof Error ? err.message : String(err);
      this.deps.log.warn({ invoice: id, code, err: message }, "stripe push failed; will retry");
      pushOutcomes.inc({ outcome: "push_failed" });
      const failed = await this.deps.store.update(id, (cur) => {
        const base = cur ?? this.initial(inv, null, null, null);
        const attempts = Math.max(1, base.attempts);
        const delay = backoffMs(
          {
            initialDelayMs: 5_000,
            maxDelayMs: this.deps.config.retryMaxMs,
            maxAttempts: 0,
            maxRetryAfterMs: 0,
          },
          attempts,
        );
        return {
          ...base,
          status: "push_failed",
          last_error: { code, message, at: new Date(this.now()).toISOString() },
          next_attempt_at: new Date(this.now() + delay).toISOString(),
          updated_at: new Date(this.now()).toISOString(),
        };
      });
      return this.announce(inv, failed);
    } finally {
      pushSeconds.observe((performance.now() - started) / 1000);
    }
  }

  /**
   * Raises the webhook event of a push outcome (pushed; push_failed, or total mismatch as a
   * push_failed). Never throws: a webhook outage must not turn a push into a failure.
   */
  private async announce<T extends StripePush | null>(inv: Invoice, rec: T): Promise<T> {
    const hooks = this.deps.webhooks;
    if (hooks === undefined || rec === null) return rec;
    try {
      if (rec.status === "pushed") {
        await hooks.emit(
          invoicePushed(
            inv,
            rec.parts.map((p) => p.stripe_invoice),
          ),
        );
      } else if ((rec.status === "push_failed" || rec.status === "mismatch") && rec.last_error !== null) {
        await hooks.emit(invoicePushFailed(inv, rec.last_error, Math.max(1, rec.attempts)));
      }
    } catch (err: unknown) {
      this.deps.log.error({ err, invoice: inv.id }, "could not raise the push webhook event");
    }
    return rec;
  }

  private initial(
    inv: Invoice,
    stripeCustomer: string | null,
    plan: PushPlan | null,
    collection: StripePush["collection"],
  ): StripePush {
    const at = new Date(this.now()).toISOString();
    return {
      invoice: inv.id,
      number: inv.number,
      customer: inv.customer,
      stripe_customer: stripeCustomer,
      currency: inv.currency,
      expected_total: inv.total,
      collection,
      step: "none",
      status: "pending",
      parts: (plan?.parts ?? []).map((p) => ({
        part: p.part,
        stripe_invoice: null,
        chunks_added: 0,
        chunks: p.chunks.length,
        finalized: false,
        stripe_status: null,
        stripe_number: null,
        stripe_total: null,
        expected_total: p.total,
      })),
      attempts: 0,
      last_error: null,
      next_attempt_at: null,
      skip_reason: null,
      created_at: at,
      updated_at: at,
      pushed_at: null,
    };
  }

  private async record(id: string, fn: (r: StripePush) => StripePush): Promise<StripePush> {
    const r = await this.deps.store.update(id, (cur) => {
      if (cur === null) throw new Error(`push record of ${id} vanished`);
      return { ...fn(cur), updated_at: new Date(this.now()).toISOString() };
    });
    return r!;
  }

  private async push(inv: Invoice, existing: StripePush | null): Promise<StripePush> {
    const { config, catalog, store, log } = this.deps;
    const kind = (inv as { kind?: string }).kind;
    if (kind === "credit_note") return this.pushCredit(inv, existing);
    if (inv.lines.length === 0) return this.skip(inv, "the invoice has no lines");

    const customer = catalog.customers.get(inv.customer);
    if (customer === undefined)
      throw new PushError("unknown_customer", `customer ${inv.customer} is not in the catalog`);
    const stripeCustomer = customer.external_ids.stripe_customer_id;
    if (stripeCustomer === undefined) {
      throw new PushError(
        "missing_stripe_customer_id",
        `customer ${inv.customer} has no external_ids.stripe_customer_id; add it to the catalog and the push retries`,
      );
    }
    const collection = existing?.collection ?? collectionOf(customer, config);
    const plan = planPush(inv, collection, config);

    // The attempt starts: the record exists before the first Stripe request.
    let rec = (await store.update(inv.id, (cur) => {
      const base = cur ?? this.initial(inv, stripeCustomer, plan, collection);
      const parts =
        base.parts.length === plan.parts.length ? base.parts : this.initial(inv, null, plan, null).parts;
      return {
        ...base,
        stripe_customer: stripeCustomer,
        collection: base.collection ?? collection,
        parts,
        status: "pending",
        attempts: base.attempts + 1,
        updated_at: new Date(this.now()).toISOString(),
      };
    }))!;

    if (rec.parts.some((p) => p.stripe_invoice === null) && this.isOld(inv)) {
      rec = await this.recoverBySearch(inv, rec);
    }

    /** Parts whose Stripe invoice was created by this run: no need to reconcile them. */
    const fresh = new Set<number>();
    const last = new Map<number, Seen>();
    for (const part of plan.parts) {
      let p = rec.parts[part.part - 1]!;
      if (p.stripe_invoice === null) {
        const created = await this.call("create invoice", () =>
          this.deps.client.stripe.invoices.create(createParams(inv, plan, part, stripeCustomer), {
            idempotencyKey: pushKey.create(inv.id, part.part),
          }),
        );
        this.crash("create");
        fresh.add(part.part);
        last.set(part.part, seen(created));
        rec = await this.setPart(inv.id, part.part, {
          stripe_invoice: created.id,
          stripe_status: created.status,
        });
        p = rec.parts[part.part - 1]!;
        log.info({ invoice: inv.id, part: part.part, stripe_invoice: created.id }, "stripe invoice created");
      } else if (!fresh.has(part.part)) {
        const r = await this.reconcile(inv, part, p);
        rec = r.rec;
        p = rec.parts[part.part - 1]!;
        last.set(part.part, r.seen);
      }
      const stripeId = p.stripe_invoice!;
      for (let k = p.chunks_added + 1; k <= part.chunks.length; k++) {
        if (p.finalized) {
          throw new PushError(
            "stripe_invoice_not_draft",
            `Stripe invoice ${stripeId} was finalized with ${p.chunks_added} of ${part.chunks.length} line chunks; void it in Stripe and reset the push`,
          );
        }
        const chunk = part.chunks[k - 1]!;
        const after = await this.call(`add lines chunk ${k}`, () =>
          this.deps.client.stripe.invoices.addLines(
            stripeId,
            { lines: chunk.map((l) => lineParams(inv, l)) },
            { idempotencyKey: pushKey.addLines(inv.id, part.part, k) },
          ),
        );
        this.crash(`add_lines:${k}`);
        last.set(part.part, seen(after));
        rec = await this.setPart(inv.id, part.part, {
          chunks_added: k,
          stripe_status: after.status,
          stripe_total: after.total,
        });
        p = rec.parts[part.part - 1]!;
      }
      if (config.finalize && !p.finalized) {
        this.crash("before_finalize");
        const fin = await this.call("finalize invoice", () =>
          this.deps.client.stripe.invoices.finalizeInvoice(
            stripeId,
            { auto_advance: false },
            { idempotencyKey: pushKey.finalize(inv.id, part.part) },
          ),
        );
        this.crash("finalize");
        last.set(part.part, seen(fin));
        rec = await this.setPart(inv.id, part.part, { finalized: true });
      }
    }
    return this.verify(inv, plan, last);
  }

  /**
   * Reads a resumed part back from Stripe: its status, and (for a draft whose lines were not all
   * recorded) which chunks it already holds, so a crash between Stripe's answer and our record
   * costs one listing instead of relying on Stripe still remembering the key.
   */
  private async reconcile(
    inv: Invoice,
    part: PartPlan,
    p: PushPart,
  ): Promise<{ rec: StripePush; seen: Seen }> {
    const id = p.stripe_invoice!;
    const current = await this.call("retrieve invoice", () => this.deps.client.stripe.invoices.retrieve(id));
    if (current.status === "draft" && p.chunks_added < part.chunks.length) {
      const present = await this.linesOn(id);
      let held = 0;
      for (const [k, chunk] of part.chunks.entries()) {
        const count = chunk.filter((l) => present.has(l.number)).length;
        if (count === chunk.length && held === k) held = k + 1;
        else if (count > 0) {
          throw new PushError(
            "stripe_lines_diverged",
            `Stripe draft ${id} holds part of line chunk ${k + 1}; it was edited outside Tally`,
          );
        }
      }
      const rec = await this.setPart(inv.id, part.part, {
        chunks_added: held,
        stripe_status: current.status,
      });
      return { rec, seen: seen(current) };
    }
    const rec = await this.setPart(inv.id, part.part, {
      finalized: current.status !== "draft",
      stripe_status: current.status,
    });
    return { rec, seen: seen(current) };
  }

  /** Tally line numbers on a Stripe invoice (from each line's `tally_line` metadata). */
  private async linesOn(stripeId: string): Promise<Set<number>> {
    const out = new Set<number>();
    let after: string | undefined;
    for (;;) {
      const page = await this.call("list invoice lines", () =>
        this.deps.client.stripe.invoices.listLineItems(stripeId, {
          limit: 100,
          ...(after !== undefined ? { starting_after: after } : {}),
        }),
      );
      for (const l of page.data) {
        const n = Number(l.metadata?.tally_line);
        if (Number.isInteger(n)) out.add(n);
      }
      if (!page.has_more || page.data.length === 0) return out;
      after = page.data.at(-1)!.id;
    }
  }

  /**
   * Finds the parts' Stripe invoices by their `tally_invoice` metadata (recovery of a lost
   * record for invoices older than the idempotency window).
   */
  private async recoverBySearch(inv: Invoice, rec: StripePush): Promise<StripePush> {
    let page: string | undefined;
    const found = new Map<number, Stripe.Invoice>();
    for (;;) {
      const res = await this.call("search invoices", () =>
        this.deps.client.stripe.invoices.search({
          query: `metadata['tally_invoice']:'${inv.id}'`,
          limit: 100,
          ...(page !== undefined ? { page } : {}),
        }),
      );
      for (const s of res.data) {
        const part = Number(s.metadata?.tally_part ?? "1");
        if (s.status === "void" || s.status === null) continue;
        const prev = found.get(part);
        if (prev !== undefined && prev.id !== s.id) {
          throw new PushError(
            "duplicate_stripe_invoices",
            `Stripe holds two invoices for ${inv.id} part ${part} (${prev.id}, ${s.id}); void one`,
          );
        }
        found.set(part, s);
      }
      if (!res.has_more || res.next_page === null) break;
      page = res.next_page;
    }
    for (const [part, s] of found) {
      if (rec.parts[part - 1]?.stripe_invoice !== null) continue;
      this.deps.log.info(
        { invoice: inv.id, part, stripe_invoice: s.id },
        "stripe invoice recovered by search",
      );
      rec = await this.setPart(inv.id, part, { stripe_invoice: s.id, stripe_status: s.status });
    }
    return rec;
  }

  /** Compares Stripe's totals with Tally's: per part and in all. A difference is an alert. */
  private async verify(inv: Invoice, plan: PushPlan, last: Map<number, Seen>): Promise<StripePush> {
    let rec = (await this.deps.store.get(inv.id))!;
    const totals: Seen[] = [];
    for (const part of plan.parts) {
      let s = last.get(part.part);
      if (s === undefined) {
        const id = rec.parts[part.part - 1]!.stripe_invoice!;
        s = seen(await this.call("retrieve invoice", () => this.deps.client.stripe.invoices.retrieve(id)));
      }
      totals.push(s);
    }
    const sum = totals.reduce((a, s) => a + s.total, 0);
    const bad = plan.parts.filter((p, i) => totals[i]!.total !== p.total);
    const ok = bad.length === 0 && sum === inv.total;
    rec = await this.record(inv.id, (r) => ({
      ...r,
      parts: r.parts.map((p, i) => ({
        ...p,
        stripe_total: totals[i]!.total,
        stripe_status: totals[i]!.status,
        stripe_number: totals[i]!.number,
      })),
      step: ok ? "verified" : this.deps.config.finalize ? "finalized" : "lines_added",
      status: ok ? "pushed" : "mismatch",
      last_error: ok
        ? null
        : {
            code: "total_mismatch",
            message: `Stripe total ${sum} (parts ${totals.map((t) => t.total).join(", ")}) differs from Tally's ${inv.total}`,
            at: new Date(this.now()).toISOString(),
          },
      next_attempt_at: null,
      pushed_at: ok ? new Date(this.now()).toISOString() : r.pushed_at,
    }));
    if (ok) {
      pushOutcomes.inc({ outcome: "pushed" });
      this.deps.log.info(
        {
          invoice: inv.id,
          parts: plan.parts.length,
          total: sum,
          stripe: rec.parts.map((p) => p.stripe_invoice),
        },
        "invoice pushed to stripe",
      );
    } else {
      pushOutcomes.inc({ outcome: "mismatch" });
      this.deps.log.error(
        {
          invoice: inv.id,
          tally_total: inv.total,
          stripe_total: sum,
          stripe: rec.parts.map((p) => p.stripe_invoice),
        },
        "ALERT: stripe invoice total differs from tally's",
      );
    }
    return rec;
  }

  /**
   * Pushes a Tally credit note as Stripe credit notes on the Stripe invoices of the invoices it
   * credits (the split rule is in credit-notes.ts). Never before those invoices: while one of them
   * is not pushed, the record stays `pending` with `last_error.code` = `waiting_for_credited_invoice`
   * and the next run looks again. The split is planned once, from what the Stripe invoices can
   * still take, and recorded before the first create, so a retry sends the same parameters under
   * the same key. A resumed credit note first lists its Stripe invoice's credit notes (read-after-
   * write consistent) for one carrying its metadata, so recovery never depends on Stripe still
   * remembering a key.
   */
  private async pushCredit(cn: Invoice, existing: StripePush | null): Promise<StripePush> {
    const { store, log } = this.deps;
    const at = () => new Date(this.now()).toISOString();
    let planned = existing?.credit_notes;
    if (planned === undefined) {
      const targets = [
        ...new Set([...(cn.credits ?? []), ...cn.lines.flatMap((l) => l.true_up?.invoice ?? [])]),
      ];
      const records: StripePush[] = [];
      for (const t of targets) {
        const r = await store.get(t);
        if (r !== null && (r.status === "mismatch" || r.status === "skipped")) {
          throw new PushError(
            `credited_invoice_${r.status}`,
            `credited invoice ${t} is ${r.status} in Stripe (${r.last_error?.message ?? r.skip_reason ?? ""}); resolve it and the push retries`,
          );
        }
        if (r === null || r.status !== "pushed") {
          const message = `waiting for credited invoice ${t} to be pushed to Stripe (it is ${r?.status ?? "not pushed yet"})`;
          log.info({ credit_note: cn.id, invoice: t }, "credit note waits for its invoice");
          return (await store.update(cn.id, (cur) => ({
            ...(cur ?? this.initial(cn, null, null, null)),
            kind: "credit_note",
            status: "pending",
            last_error: { code: waitingCode, message, at: at() },
            next_attempt_at: null,
            updated_at: at(),
          })))!;
        }
        records.push(r);
      }
      const rooms: PartRoom[] = [];
      for (const r of records) {
        for (const p of r.parts) {
          const id = p.stripe_invoice!;
          const s = await this.call("retrieve invoice", () => this.deps.client.stripe.invoices.retrieve(id));
          if (s.status === "draft") {
            throw new PushError(
              "credited_invoice_not_finalized_in_stripe",
              `Stripe invoice ${id} of ${r.invoice} is a draft; Stripe credits only finalized invoices (TALLY_STRIPE_FINALIZE)`,
            );
          }
          const open = s.status === "open" || s.status === "uncollectible";
          rooms.push({
            invoice: r.invoice,
            part: p.part,
            stripe_invoice: id,
            pre: open ? s.amount_remaining : 0,
            post: s.status === "void" ? 0 : s.amount_paid - s.post_payment_credit_notes_amount,
          });
        }
      }
      const plan = planCreditNote(cn, rooms);
      const planTotal = plan.reduce((a, p) => a + p.amount, 0);
      if (planTotal !== -cn.total) {
        throw new PushError(
          "credit_note_lines_total",
          `the lines of ${cn.id} sum to ${-planTotal}, its total is ${cn.total}`,
        );
      }
      const stripeCustomer = records[0]?.stripe_customer ?? null;
      // The first plan recorded wins (another pusher may have planned meanwhile).
      const rec = (await store.update(cn.id, (cur) => {
        const base = cur ?? this.initial(cn, stripeCustomer, null, null);
        if (base.credit_notes !== undefined) return null;
        return {
          ...base,
          kind: "credit_note",
          stripe_customer: stripeCustomer,
          credit_notes: plan,
          updated_at: at(),
        };
      }))!;
      planned = rec.credit_notes!;
    }
    let rec = (await store.update(cn.id, (cur) => ({
      ...cur!,
      status: "pending",
      attempts: cur!.attempts + 1,
      last_error: cur!.last_error?.code === waitingCode ? null : cur!.last_error,
      updated_at: at(),
    })))!;
    const resumed = existing?.credit_notes !== undefined;
    const n = planned.length;
    for (const p of planned) {
      if (rec.credit_notes!.find((x) => x.k === p.k)!.stripe_credit_note !== null) continue;
      let made: Stripe.CreditNote | undefined = resumed ? await this.findCreditNote(cn, p) : undefined;
      if (made === undefined) {
        made = await this.call(`create credit note ${p.k}`, () =>
          this.deps.client.stripe.creditNotes.create(creditNoteParams(cn, p, n), {
            idempotencyKey: creditNoteKey(cn.id, p.k),
          }),
        );
        this.crash(`credit_note:${p.k}`);
      }
      const got = made;
      rec = await this.record(cn.id, (r) => ({
        ...r,
        step: "created",
        credit_notes: r.credit_notes!.map((x) =>
          x.k === p.k ? { ...x, stripe_credit_note: got.id, stripe_total: got.total } : x,
        ),
      }));
      log.info(
        { credit_note: cn.id, k: p.k, stripe_invoice: p.stripe_invoice, stripe_credit_note: got.id },
        "stripe credit note created",
      );
    }
    const sum = rec.credit_notes!.reduce((a, x) => a + (x.stripe_total ?? 0), 0);
    const ok = sum === -cn.total;
    rec = await this.record(cn.id, (r) => ({
      ...r,
      step: ok ? "verified" : "created",
      status: ok ? "pushed" : "mismatch",
      last_error: ok
        ? null
        : {
            code: "total_mismatch",
            message: `Stripe credit notes total ${sum} (${r.credit_notes!.map((x) => x.stripe_total).join(", ")}) differs from Tally's ${-cn.total}`,
            at: at(),
          },
      next_attempt_at: null,
      pushed_at: ok ? at() : r.pushed_at,
    }));
    pushOutcomes.inc({ outcome: ok ? "pushed" : "mismatch" });
    if (ok) log.info({ credit_note: cn.id, total: sum, stripe: n }, "credit note pushed to stripe");
    else
      log.error(
        { credit_note: cn.id, tally_total: cn.total, stripe_total: sum },
        "ALERT: stripe credit notes total differs from tally's",
      );
    return rec;
  }

  /** A Stripe credit note already made for planned note `p` (after a crash before it was recorded). */
  private async findCreditNote(cn: Invoice, p: CreditNotePush): Promise<Stripe.CreditNote | undefined> {
    let after: string | undefined;
    for (;;) {
      const page = await this.call("list credit notes", () =>
        this.deps.client.stripe.creditNotes.list({
          invoice: p.stripe_invoice,
          limit: 100,
          ...(after !== undefined ? { starting_after: after } : {}),
        }),
      );
      const hit = page.data.find(
        (c) =>
          c.status !== "void" &&
          c.metadata?.tally_credit_note === cn.id &&
          c.metadata?.tally_part === String(p.k),
      );
      if (hit !== undefined) return hit;
      if (!page.has_more || page.data.length === 0) return undefined;
      after = page.data.at(-1)!.id;
    }
  }

  private async skip(inv: Invoice, reason: string): Promise<StripePush> {
    pushOutcomes.inc({ outcome: "skipped" });
    this.deps.log.info({ invoice: inv.id, reason }, "invoice not pushed to stripe");
    return (await this.deps.store.update(inv.id, (cur) => ({
      ...(cur ?? this.initial(inv, null, null, null)),
      status: "skipped",
      skip_reason: reason,
      updated_at: new Date(this.now()).toISOString(),
    })))!;
  }

  private setPart(id: string, part: number, patch: Partial<PushPart>): Promise<StripePush> {
    return this.record(id, (r) => {
      const parts = r.parts.map((p) => (p.part === part ? { ...p, ...patch } : p));
      return { ...r, parts, step: stepOf(parts, this.deps.config.finalize) };
    });
  }

  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return callStripe(what, fn, {
      onRetry: (reason, delayMs) => {
        stripeRetries.inc({ reason });
        this.deps.log.debug({ what, reason, delayMs }, "stripe request retried");
      },
    });
  }

  private crash(point: string): void {
    this.deps.crashPoint?.(point);
  }

  private isOld(inv: Invoice): boolean {
    return inv.finalized_at !== null && this.now() - Date.parse(inv.finalized_at) >= searchAfterMs;
  }
}

/**
 * Credit notes finalized before this connector pushed them were recorded `skipped` with this
 * reason; they are pushed now like any credit note.
 */
function legacyCreditSkip(r: StripePush): boolean {
  return r.status === "skipped" && r.skip_reason === "credit notes are not pushed to Stripe yet";
}

/** The step all parts have reached. */
function stepOf(parts: readonly PushPart[], finalize: boolean): StripePush["step"] {
  if (parts.length === 0 || parts.some((p) => p.stripe_invoice === null)) {
    return parts.some((p) => p.stripe_invoice !== null) ? "created" : "none";
  }
  if (parts.some((p) => p.chunks_added < p.chunks)) return "created";
  if (finalize && parts.some((p) => !p.finalized)) return "lines_added";
  return finalize ? "finalized" : "lines_added";
}
