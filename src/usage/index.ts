export {
  listEvidence,
  maxUsageRows,
  queryEvidence,
  queryUsage,
  twDecimals,
  UsageRequestError,
} from "./query.js";
export type {
  EvidenceEvent,
  UsageDeps,
  UsageEvidence,
  UsageRequest,
  UsageResult,
  UsageRow,
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
