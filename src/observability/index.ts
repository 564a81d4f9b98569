export { createLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export { registry } from "./metrics.js";
