import type Stripe from "stripe";

/**
 * Response bodies are typed against stripe-node 23.1.0's own object types, so a field the SDK
 * declares required but this server forgets (or a renamed one) fails `tsc`. `Wire<T>` is the JSON
 * form of T: the SDK types `decimal_string` fields as `Stripe.Decimal` and converts the wire string
 * on receipt (`V2Coercion.js`), so on the wire they are strings.
 */
export type Wire<T> = T extends Stripe.Decimal
  ? string
  : T extends (infer U)[]
    ? Wire<U>[]
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T;

export type Metadata = Record<string, string>;

export interface CustomerRec {
  id: string;
  created: number;
  name: string | null;
  email: string | null;
  description: string | null;
  metadata: Metadata;
  /** Set by the first invoice (Customer.currency: "the currency the customer can be charged in"). */
  currency: string | null;
  invoicePrefix: string;
  nextInvoiceSequence: number;
  footer: string | null;
  /** Minor units the customer owes (positive) or has in credit (negative), as Customer.balance. */
  balance: number;
}

export interface LineRec {
  id: string;
  invoiceItem: string;
  amount: number;
  currency: string;
  description: string | null;
  metadata: Metadata;
  period: { start: number; end: number };
  quantity: number;
  unitAmountDecimal: string | null;
  discountable: boolean;
}

export type InvoiceStatus = "draft" | "open" | "paid" | "uncollectible" | "void";

export interface InvoiceRec {
  id: string;
  created: number;
  customer: string;
  currency: string;
  status: InvoiceStatus;
  autoAdvance: boolean;
  collectionMethod: "charge_automatically" | "send_invoice";
  daysUntilDue: number | null;
  dueDate: number | null;
  description: string | null;
  metadata: Metadata;
  lines: LineRec[];
  number: string | null;
  finalizedAt: number | null;
  paidAt: number | null;
  voidedAt: number | null;
  markedUncollectibleAt: number | null;
  amountPaid: number;
  prePaymentCreditNotes: number;
  postPaymentCreditNotes: number;
  paidOutOfBand: boolean;
}

export interface CreditNoteLineRec {
  id: string;
  type: "invoice_line_item" | "custom_line_item";
  amount: number;
  description: string | null;
  invoiceLineItem: string | undefined;
  quantity: number | null;
  unitAmount: number | null;
  metadata: Metadata;
}

export interface CreditNoteRec {
  id: string;
  created: number;
  invoice: string;
  customer: string;
  currency: string;
  number: string;
  amount: number;
  type: "pre_payment" | "post_payment";
  memo: string | null;
  metadata: Metadata;
  reason: Stripe.CreditNote.Reason | null;
  outOfBandAmount: number | null;
  lines: CreditNoteLineRec[];
  status: "issued" | "void";
}

export const sumLines = (lines: readonly LineRec[]): number => lines.reduce((s, l) => s + l.amount, 0);

/** How many lines a retrieved invoice embeds; the rest is paginated at `lines.url`. */
export const EMBEDDED_LINES = 10;

export function renderCustomer(c: CustomerRec): Wire<Stripe.Customer> {
  return {
    id: c.id,
    object: "customer",
    address: null,
    balance: c.balance,
    created: c.created,
    currency: c.currency,
    default_source: null,
    delinquent: false,
    description: c.description,
    discount: null,
    email: c.email,
    invoice_prefix: c.invoicePrefix,
    invoice_settings: {
      custom_fields: null,
      default_payment_method: null,
      footer: c.footer,
      rendering_options: null,
    },
    livemode: false,
    metadata: c.metadata,
    name: c.name,
    next_invoice_sequence: c.nextInvoiceSequence,
    phone: null,
    preferred_locales: [],
    shipping: null,
    tax_exempt: "none",
    test_clock: null,
  } satisfies Wire<Stripe.Customer>;
}

export function renderLine(l: LineRec, invoiceId: string): Wire<Stripe.InvoiceLineItem> {
  return {
    id: l.id,
    object: "line_item",
    amount: l.amount,
    currency: l.currency,
    description: l.description,
    discount_amounts: [],
    discountable: l.discountable,
    discounts: [],
    invoice: invoiceId,
    livemode: false,
    metadata: l.metadata,
    parent: {
      type: "invoice_item_details",
      invoice_item_details: {
        invoice_item: l.invoiceItem,
        proration: false,
        proration_details: { credited_items: null },
        subscription: null,
      },
      subscription_item_details: null,
    },
    period: { start: l.period.start, end: l.period.end },
    pretax_credit_amounts: [],
    // ASSUMED: an `amount`-only item carries no price; Stripe may attach an implicit one.
    pricing:
      l.unitAmountDecimal === null
        ? null
        : { type: "price_details", unit_amount_decimal: l.unitAmountDecimal },
    quantity: l.quantity,
    quantity_decimal: String(l.quantity),
    subscription: null,
    subtotal: l.amount,
    taxes: [],
  } satisfies Wire<Stripe.InvoiceLineItem>;
}

export function linePage(
  lines: Wire<Stripe.InvoiceLineItem>[],
  hasMore: boolean,
  url: string,
): Wire<Stripe.ApiList<Stripe.InvoiceLineItem>> {
  return { object: "list", data: lines, has_more: hasMore, url } satisfies Wire<
    Stripe.ApiList<Stripe.InvoiceLineItem>
  >;
}

/**
 * Totals: no tax, discounts or customer balance are modelled, so subtotal = total = Σ line amounts,
 * and amount_due = total − pre-payment credit notes (https://docs.stripe.com/invoicing/integration/workflow-transitions;
 * CreditNote `pre_payment_amount` reduces the invoice's amount_due, stripe@23.1.0 CreditNotes.d.ts).
 */
export function renderInvoice(inv: InvoiceRec, cust: CustomerRec | undefined): Wire<Stripe.Invoice> {
  const total = sumLines(inv.lines);
  const amountDue = Math.max(0, total - inv.prePaymentCreditNotes);
  const embedded = inv.lines.slice(0, EMBEDDED_LINES).map((l) => renderLine(l, inv.id));
  return {
    id: inv.id,
    object: "invoice",
    account_country: "US",
    account_name: "Tally test account",
    account_tax_ids: null,
    amount_due: amountDue,
    amount_overpaid: 0,
    amount_paid: inv.amountPaid,
    amount_remaining: Math.max(0, amountDue - inv.amountPaid),
    amount_shipping: 0,
    application: null,
    attempt_count: 0,
    attempted: inv.status === "paid" && !inv.paidOutOfBand,
    auto_advance: inv.autoAdvance,
    automatic_tax: {
      disabled_reason: null,
      enabled: false,
      liability: null,
      provider: null,
      status: null,
    },
    automatically_finalizes_at: null,
    billing_reason: "manual",
    collection_method: inv.collectionMethod,
    created: inv.created,
    currency: inv.currency,
    custom_fields: null,
    customer: inv.customer,
    customer_account: null,
    customer_address: null,
    customer_email: cust?.email ?? null,
    customer_name: cust?.name ?? null,
    customer_phone: null,
    customer_shipping: null,
    customer_tax_exempt: "none",
    customer_tax_ids: [],
    default_payment_method: null,
    default_source: null,
    default_tax_rates: [],
    description: inv.description,
    discounts: [],
    due_date: inv.dueDate,
    effective_at: inv.finalizedAt,
    ending_balance: inv.status === "draft" ? null : 0,
    footer: cust?.footer ?? null,
    from_invoice: null,
    hosted_invoice_url: inv.status === "draft" ? null : `https://invoice.stripe.test/${inv.id}`,
    invoice_pdf: inv.status === "draft" ? null : `https://pay.stripe.test/${inv.id}/pdf`,
    issuer: { type: "self" },
    last_finalization_error: null,
    latest_revision: null,
    lines: linePage(embedded, inv.lines.length > EMBEDDED_LINES, `/v1/invoices/${inv.id}/lines`),
    livemode: false,
    metadata: inv.metadata,
    next_payment_attempt: null,
    number: inv.number,
    on_behalf_of: null,
    parent: null,
    payment_settings: {
      default_mandate: null,
      payment_method_options: null,
      payment_method_types: null,
    },
    period_end: inv.created,
    period_start: inv.created,
    post_payment_credit_notes_amount: inv.postPaymentCreditNotes,
    pre_payment_credit_notes_amount: inv.prePaymentCreditNotes,
    receipt_number: null,
    rendering: null,
    shipping_cost: null,
    shipping_details: null,
    starting_balance: 0,
    statement_descriptor: null,
    status: inv.status,
    status_transitions: {
      finalized_at: inv.finalizedAt,
      marked_uncollectible_at: inv.markedUncollectibleAt,
      paid_at: inv.paidAt,
      voided_at: inv.voidedAt,
    },
    subtotal: total,
    subtotal_excluding_tax: total,
    test_clock: null,
    total,
    total_discount_amounts: [],
    total_excluding_tax: total,
    total_pretax_credit_amounts: [],
    total_taxes: [],
    webhooks_delivered_at: inv.created,
  } satisfies Wire<Stripe.Invoice>;
}

export function renderCreditNote(cn: CreditNoteRec): Wire<Stripe.CreditNote> {
  const lines = cn.lines.map(
    (l): Wire<Stripe.CreditNoteLineItem> =>
      ({
        id: l.id,
        object: "credit_note_line_item",
        amount: l.amount,
        description: l.description,
        discount_amount: 0,
        discount_amounts: [],
        ...(l.invoiceLineItem === undefined ? {} : { invoice_line_item: l.invoiceLineItem }),
        livemode: false,
        metadata: l.metadata,
        pretax_credit_amounts: [],
        quantity: l.quantity,
        tax_rates: [],
        taxes: [],
        type: l.type,
        unit_amount: l.unitAmount,
        unit_amount_decimal: l.unitAmount === null ? null : String(l.unitAmount),
      }) satisfies Wire<Stripe.CreditNoteLineItem>,
  );
  return {
    id: cn.id,
    object: "credit_note",
    amount: cn.amount,
    amount_shipping: 0,
    created: cn.created,
    currency: cn.currency,
    customer: cn.customer,
    customer_account: null,
    customer_balance_transaction: null,
    discount_amount: 0,
    discount_amounts: [],
    effective_at: cn.created,
    invoice: cn.invoice,
    lines: {
      object: "list",
      data: lines,
      has_more: false,
      url: `/v1/credit_notes/${cn.id}/lines`,
    },
    livemode: false,
    memo: cn.memo,
    metadata: cn.metadata,
    number: cn.number,
    out_of_band_amount: cn.outOfBandAmount,
    pdf: `https://pay.stripe.test/credit_notes/${cn.id}/pdf`,
    post_payment_amount: cn.type === "post_payment" ? cn.amount : 0,
    pre_payment_amount: cn.type === "pre_payment" ? cn.amount : 0,
    pretax_credit_amounts: [],
    reason: cn.reason,
    refunds: [],
    shipping_cost: null,
    status: cn.status,
    subtotal: cn.amount,
    subtotal_excluding_tax: cn.amount,
    total: cn.amount,
    total_excluding_tax: cn.amount,
    total_taxes: [],
    type: cn.type,
    voided_at: null,
  } satisfies Wire<Stripe.CreditNote>;
}

export type InvoiceEventType =
  | "invoice.created"
  | "invoice.finalized"
  | "invoice.paid"
  | "invoice.payment_failed"
  | "invoice.voided"
  | "invoice.marked_uncollectible"
  | "invoice.deleted";

/** An event as Stripe would send it (https://docs.stripe.com/api/events/object). */
export function renderEvent(
  id: string,
  type: InvoiceEventType,
  object: Wire<Stripe.Invoice>,
  created: number,
  apiVersion: string | null,
  request: { id: string | null; idempotency_key: string | null } | null,
): Wire<Stripe.Event> {
  const event = {
    id,
    object: "event",
    api_version: apiVersion,
    created,
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request,
    type,
  } satisfies Omit<Wire<Stripe.InvoicePaidEvent>, "type"> & { type: InvoiceEventType };
  return event;
}
