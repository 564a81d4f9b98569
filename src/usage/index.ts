export {
  listEvidence,
  maxUsageRows,
  emptyUsageValue,
  queryEvidence,
  queryTotals,
  queryUsage,
  twDecimals,
  UsageRequestError,
} from "./query.js";
export type {
  EvidenceEvent,
  TotalsRequest,
  UsageDeps,
  UsageEvidence,
  UsageRequest,
  UsageResult,
  UsageRow,
  UsageTotal,
} from "./query.js";
export { digestHex, idDigest } from "./evidence.js";
export {
  formatInZone,
  isValidZone,
  maxWindows,
  monthContaining,
  windowSizes,
  windowsOf,
  zoneFormatter,
} from "./windows.js";
export type { Window, WindowSize } from "./windows.js";
export { defaultRollupSettleMs, fillRollup, RollupFiller } from "./rollup.js";
export type { FillOptions, FillOutcome } from "./rollup.js";
export { chainOf, readChain } from "./rollup-chain.js";
export type { FillUnit, RollupChain } from "./rollup-chain.js";
