export type { JournalEntry, JournalEntryKind, JournalLine, JournalReader } from "./journal.js";
export {
  allocate,
  assertBalanced,
  dayIn,
  documentDate,
  documentEntry,
  documentEntryId,
  entryId,
  JournalDerivationError,
  lastDayOf,
  lineAccount,
  lineParts,
  monthsOf,
  paymentEntry,
  paymentEntryId,
  recognitionEntries,
  recognitionEntryId,
} from "./derive.js";
export type { DeriveOptions, LinePart, MonthSlice, RecordedPayment } from "./derive.js";
export { JournalStore, monthsBetween } from "./store.js";
export { JournalPoster, postJournals } from "./post.js";
export type { PostDeps, PostReport } from "./post.js";
export { openJournalPoster } from "./setup.js";
export {
  exportColumns,
  exportCsv,
  exportRows,
  loadRevenueInputs,
  monthPattern,
  revenueReport,
} from "./revenue.js";
export type { ExportRow, RevenueInputs, RevenueReport, RevenueRow } from "./revenue.js";
