/**
 * Tally's public package surface, including the SDK (`Tally` client, see docs/sdk.md).
 */
export * from "./rating/index.js";
export { eventLimits } from "./events/index.js";
export type { NormalizedEvent } from "./events/index.js";
export { loadConfig } from "./config/index.js";
export type { Config } from "./config/index.js";
export * from "./sdk/index.js";
