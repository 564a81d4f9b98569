export { closeDue, periodRule, upcomingInvoice } from "./close.js";
export type { CloseDeps, CloseReport, CloseSettings, SnapshotRequest, Snapshotter } from "./close.js";
export { formatNumber, InvoiceIndex, invoiceId, InvoiceStore } from "./invoice-store.js";
export type { InvoiceFilter, InvoiceSummary } from "./invoice-store.js";
export type { Invoice, InvoiceLine, InvoiceStatus, UsageSnapshot } from "./invoice.js";
export { LeaderLease } from "./leader.js";
export { boundary, endedPeriods, periodAt } from "./periods.js";
export type { BillingPeriodSlot, PeriodRule } from "./periods.js";
export { usageSnapshotter } from "./snapshot.js";
