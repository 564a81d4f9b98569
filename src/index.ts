/**
 * Tally's public package surface. The SDK (`Tally` client) will be exported from here too.
 */
export * from "./rating/index.js";
export { eventLimits } from "./events/index.js";
export type { NormalizedEvent } from "./events/index.js";
export { loadConfig } from "./config/index.js";
export type { Config } from "./config/index.js";
