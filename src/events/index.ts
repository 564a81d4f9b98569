export { eventLimits, typePattern } from "./limits.js";
export { normalizeEvent, parseRfc3339, exactNumber, isWellFormed } from "./normalize.js";
export type { NormalizedEvent, NormalizeContext } from "./normalize.js";
export { validateEvents } from "./validate.js";
export type { ValidatedBatch } from "./validate.js";
export { bodyFormat, decodeContent, decodeEvents } from "./decode.js";
export type { BodyFormat } from "./decode.js";
