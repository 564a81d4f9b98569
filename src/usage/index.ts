export { maxUsageRows, queryUsage, twDecimals, UsageRequestError } from "./query.js";
export type { UsageDeps, UsageRequest, UsageResult, UsageRow } from "./query.js";
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
