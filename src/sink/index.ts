export { Sink } from "./sink.js";
export type { SinkOptions } from "./sink.js";
export { dedup, uniqueIds, fingerprint } from "./dedup.js";
export type { EventRow, LedgerRow, DedupResult } from "./dedup.js";
export { messageSettled } from "./settled.js";
