import type Stripe from "stripe";
import { invalid, missing } from "./errors.js";
import {
  renderCreditNote,
  renderCustomer,
  renderEvent,
  renderInvoice,
  sumLines,
  type CreditNoteRec,
  type CustomerRec,
  type InvoiceEventType,
  type InvoiceRec,
  type LineRec,
  type Wire,
} from "./objects.js";
import { newId, type Clock } from "./ids.js";

export interface StateOptions {
  clock: Clock;
  maxLinesPerInvoice: number;
  searchLagMs: number;
  defaultCurrency: string;
}

export interface RequestMeta {
  requestId: string;
  idempotencyKey: string | null;
  apiVersion: string;
}

const MIN_CHARGE: Record<string, number> = {
  usd: 50,
  eur: 50,
  gbp: 30,
  cad: 50,
  aud: 50,
  chf: 50,
  jpy: 50,
  sek: 300,
  nok: 300,
  dkk: 250,
};

/** A state error raised after the endpoint "began executing": saved under the idempotency key. */
const stateError = (message: string, param: string | undefined, code?: string) =>
  invalid(message, param, code, "execution");

/**
 * The in-memory account. Domain rules live here; `routes.ts` only turns form params into typed
 * arguments. Tests may read (and, to stage a scenario, change) it directly.
 */
export class State {
  readonly customers = new Map<string, CustomerRec>();
  readonly invoices = new Map<string, InvoiceRec>();
  readonly creditNotes = new Map<string, CreditNoteRec>();
  /** Events in creation order, as Stripe would deliver them to a webhook endpoint. */
  readonly events: Wire<Stripe.Event>[] = [];
  /** When each invoice (last) became visible to search: written time + searchLagMs. */
  private readonly searchableAt = new Map<string, number>();

  constructor(readonly opts: StateOptions) {}

  private now(): number {
    return this.opts.clock.nowSec();
  }

  private touch(inv: InvoiceRec): void {
    // Only the first indexing is delayed: a search sees current data once the invoice is indexed.
    if (!this.searchableAt.has(inv.id)) {
      this.searchableAt.set(inv.id, this.opts.clock.now() + this.opts.searchLagMs);
    }
  }

  isSearchable(id: string): boolean {
    const at = this.searchableAt.get(id);
    return at !== undefined && this.opts.clock.now() >= at;
  }

  private emit(type: InvoiceEventType, inv: InvoiceRec, meta: RequestMeta | null): void {
    this.events.push(
      renderEvent(
        newId("evt"),
        type,
        this.invoiceView(inv),
        this.now(),
        meta?.apiVersion ?? null,
        meta === null ? null : { id: meta.requestId, idempotency_key: meta.idempotencyKey },
      ),
    );
  }

  /** Builds (and records) an invoice event from the invoice's current state, for webhook tests. */
  eventFor(type: InvoiceEventType, invoiceId: string): Wire<Stripe.Event> {
    this.emit(type, this.invoice(invoiceId), null);
    return this.events[this.events.length - 1]!;
  }

  customer(id: string, param?: string): CustomerRec {
    const c = this.customers.get(id);
    if (!c) throw missing("customer", id, param);
    return c;
  }

  invoice(id: string, param?: string): InvoiceRec {
    const inv = this.invoices.get(id);
    if (!inv) throw missing("invoice", id, param);
    return inv;
  }

  customerView(c: CustomerRec): Wire<Stripe.Customer> {
    return renderCustomer(c);
  }

  invoiceView(inv: InvoiceRec): Wire<Stripe.Invoice> {
    return renderInvoice(inv, this.customers.get(inv.customer));
  }

  createCustomer(input: {
    name: string | null;
    email: string | null;
    description: string | null;
    metadata: Record<string, string>;
    invoicePrefix: string | undefined;
    footer: string | null;
  }): CustomerRec {
    const prefix =
      input.invoicePrefix ??
      newId("x")
        .slice(2, 10)
        .toUpperCase()
        .replace(/[^A-Z0-9]/g, "A");
    const c: CustomerRec = {
      id: newId("cus"),
      created: this.now(),
      name: input.name,
      email: input.email,
      description: input.description,
      metadata: input.metadata,
      currency: null,
      invoicePrefix: prefix,
      nextInvoiceSequence: 1,
      footer: input.footer,
      balance: 0,
    };
    this.customers.set(c.id, c);
    return c;
  }

  createInvoice(
    input: {
      customer: string;
      currency: string | undefined;
      autoAdvance: boolean;
      collectionMethod: "charge_automatically" | "send_invoice";
      daysUntilDue: number | null;
      dueDate: number | null;
      description: string | null;
      metadata: Record<string, string>;
    },
    meta: RequestMeta,
  ): InvoiceRec {
    const cust = this.customer(input.customer, "customer");
    const currency = input.currency ?? cust.currency ?? this.opts.defaultCurrency;
    if (cust.currency === null) cust.currency = currency;
    const inv: InvoiceRec = {
      id: newId("in"),
      created: this.now(),
      customer: cust.id,
      currency,
      status: "draft",
      autoAdvance: input.autoAdvance,
      collectionMethod: input.collectionMethod,
      daysUntilDue: input.daysUntilDue,
      dueDate: input.dueDate,
      description: input.description,
      metadata: input.metadata,
      lines: [],
      number: null,
      finalizedAt: null,
      paidAt: null,
      voidedAt: null,
      markedUncollectibleAt: null,
      amountPaid: 0,
      prePaymentCreditNotes: 0,
      postPaymentCreditNotes: 0,
      paidOutOfBand: false,
    };
    this.invoices.set(inv.id, inv);
    this.touch(inv);
    this.emit("invoice.created", inv, meta);
    return inv;
  }

  /**
   * `POST /v1/invoices/:id/add_lines`: "only possible when an invoice is still a draft" and "a
   * maximum of 250 items per invoice" (stripe@23.1.0 Invoices.d.ts / InvoiceItems.d.ts;
   * https://docs.stripe.com/changelog/2016-02-22/no-more-than-250-invoice-items "Returns an error on
   * attempts to add more than 250 invoice items to an invoice"). All-or-nothing: a call that would
   * pass the limit adds none of its lines (ASSUMED; the error's code and wording are not documented).
   */
  addLines(
    invoiceId: string,
    lines: Omit<LineRec, "id" | "invoiceItem" | "currency">[],
    invoiceMetadata: ((m: Record<string, string>) => Record<string, string>) | undefined,
  ): InvoiceRec {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "draft") {
      throw stateError(
        `You can only add lines to a draft invoice; this invoice is ${inv.status}.`,
        undefined,
        "invoice_not_editable",
      );
    }
    const max = this.opts.maxLinesPerInvoice;
    if (inv.lines.length + lines.length > max) {
      throw stateError(
        `An invoice can have at most ${max} invoice items. This invoice has ${inv.lines.length}, and this request would add ${lines.length}.`,
        "lines",
      );
    }
    for (const l of lines) {
      inv.lines.push({ ...l, id: newId("il"), invoiceItem: newId("ii"), currency: inv.currency });
    }
    if (invoiceMetadata) inv.metadata = invoiceMetadata(inv.metadata);
    return inv;
  }

  /**
   * Finalize (https://docs.stripe.com/invoicing/integration/workflow-transitions: draft → open,
   * event invoice.finalized). Stripe "assigns `number` at finalization unless one was set"
   * (stripe@23.1.0 Invoices.d.ts); the `PREFIX-NNNN` form follows Customer.invoice_prefix and
   * next_invoice_sequence. https://docs.stripe.com/api/invoices/object: "If the amount due for the
   * invoice is less than Stripe's minimum allowed charge per currency, the invoice is automatically
   * marked paid, and we add the amount due to the customer's credit balance". The minimums come from
   * https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts (from memory, not re-read
   * here; unknown currencies use 50).
   */
  finalize(invoiceId: string, autoAdvance: boolean | undefined, meta: RequestMeta): InvoiceRec {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "draft") {
      throw stateError(
        "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
        undefined,
        "invoice_not_editable",
      );
    }
    const cust = this.customer(inv.customer);
    const now = this.now();
    inv.number = `${cust.invoicePrefix}-${String(cust.nextInvoiceSequence++).padStart(4, "0")}`;
    inv.status = "open";
    inv.finalizedAt = now;
    if (autoAdvance !== undefined) inv.autoAdvance = autoAdvance;
    if (inv.collectionMethod === "send_invoice" && inv.dueDate === null) {
      inv.dueDate = now + (inv.daysUntilDue ?? 30) * 86_400;
    }
    this.emit("invoice.finalized", inv, meta);
    const due = Math.max(0, sumLines(inv.lines) - inv.prePaymentCreditNotes);
    if (due < (MIN_CHARGE[inv.currency] ?? 50)) {
      cust.balance += due;
      inv.status = "paid";
      inv.paidAt = now;
      this.emit("invoice.paid", inv, meta);
    }
    return inv;
  }

  /** open | uncollectible → paid (workflow-transitions table). */
  pay(invoiceId: string, outOfBand: boolean, meta: RequestMeta): InvoiceRec {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "open" && inv.status !== "uncollectible") {
      throw stateError(
        `Invoice is ${inv.status}; only open or uncollectible invoices can be paid.`,
        undefined,
        "invoice_not_editable",
      );
    }
    const due = Math.max(0, sumLines(inv.lines) - inv.prePaymentCreditNotes);
    inv.amountPaid = due;
    inv.status = "paid";
    inv.paidAt = this.now();
    inv.paidOutOfBand = outOfBand;
    this.emit("invoice.paid", inv, meta);
    return inv;
  }

  /** open | uncollectible → void; a draft "is deleted instead" (Invoices.d.ts). */
  void(invoiceId: string, meta: RequestMeta): InvoiceRec {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "open" && inv.status !== "uncollectible") {
      throw stateError(
        inv.status === "draft"
          ? "You can only void finalized invoices; delete a draft instead."
          : `Invoice is ${inv.status}; only open or uncollectible invoices can be voided.`,
        undefined,
        "invoice_not_editable",
      );
    }
    inv.status = "void";
    inv.voidedAt = this.now();
    this.emit("invoice.voided", inv, meta);
    return inv;
  }

  /** open → uncollectible. */
  markUncollectible(invoiceId: string, meta: RequestMeta): InvoiceRec {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "open") {
      throw stateError(
        `Invoice is ${inv.status}; only open invoices can be marked uncollectible.`,
        undefined,
        "invoice_not_editable",
      );
    }
    inv.status = "uncollectible";
    inv.markedUncollectibleAt = this.now();
    this.emit("invoice.marked_uncollectible", inv, meta);
    return inv;
  }

  /** `DELETE /v1/invoices/:id`: drafts only ("Attempts to delete invoices that are no longer in a draft state will fail"). */
  deleteDraft(invoiceId: string, meta: RequestMeta): void {
    const inv = this.invoice(invoiceId);
    if (inv.status !== "draft") {
      throw stateError("You can only delete draft invoices.", undefined, "invoice_not_editable");
    }
    this.emit("invoice.deleted", inv, meta);
    this.invoices.delete(inv.id);
    this.searchableAt.delete(inv.id);
  }

  /**
   * Credit notes (stripe@23.1.0 CreditNotes.d.ts): on a finalized invoice; before payment they reduce
   * amount_due (`pre_payment_amount`), after payment `refund_amount + credit_amount +
   * out_of_band_amount` must equal the amount (`post_payment_amount`). Several per invoice allowed.
   */
  createCreditNote(input: {
    invoice: string;
    amount: number;
    lines: CreditNoteRec["lines"];
    memo: string | null;
    metadata: Record<string, string>;
    reason: Stripe.CreditNote.Reason | null;
    creditAmount: number;
    refundAmount: number;
    outOfBandAmount: number | null;
  }): CreditNoteRec {
    const inv = this.invoice(input.invoice, "invoice");
    if (inv.status === "draft" || inv.status === "void") {
      throw stateError(`You can't create a credit note for a ${inv.status} invoice.`, "invoice");
    }
    const total = sumLines(inv.lines);
    if (input.amount <= 0) throw stateError("The credit note amount must be positive.", "amount");
    let type: CreditNoteRec["type"];
    if (inv.status === "paid") {
      type = "post_payment";
      const room = inv.amountPaid - inv.postPaymentCreditNotes;
      if (input.amount > room) {
        throw stateError(
          `The credit note amount (${input.amount}) exceeds the amount that can be credited (${room}).`,
          "amount",
        );
      }
      const settled = input.creditAmount + input.refundAmount + (input.outOfBandAmount ?? 0);
      if (settled !== input.amount) {
        throw stateError(
          "For a paid invoice, the sum of refund_amount, credit_amount and out_of_band_amount must equal the credit note amount.",
          "amount",
        );
      }
      inv.postPaymentCreditNotes += input.amount;
    } else {
      type = "pre_payment";
      const room = total - inv.prePaymentCreditNotes - inv.amountPaid;
      if (input.amount > room) {
        throw stateError(
          `The credit note amount (${input.amount}) exceeds the invoice's amount remaining (${room}).`,
          "amount",
        );
      }
      inv.prePaymentCreditNotes += input.amount;
    }
    const seqForInvoice = [...this.creditNotes.values()].filter((c) => c.invoice === inv.id).length + 1;
    const cn: CreditNoteRec = {
      id: newId("cn"),
      created: this.now(),
      invoice: inv.id,
      customer: inv.customer,
      currency: inv.currency,
      number: `${inv.number ?? inv.id}-CN-${String(seqForInvoice).padStart(2, "0")}`,
      amount: input.amount,
      type,
      memo: input.memo,
      metadata: input.metadata,
      reason: input.reason,
      outOfBandAmount: input.outOfBandAmount,
      lines: input.lines,
      status: "issued",
    };
    this.creditNotes.set(cn.id, cn);
    return cn;
  }

  creditNoteView(cn: CreditNoteRec): Wire<Stripe.CreditNote> {
    return renderCreditNote(cn);
  }
}
