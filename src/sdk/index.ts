export { Tally } from "./client.js";
export type { TallyOptions, TallyLogger, TallyStats } from "./client.js";
export type { TallyEvent, PropertyValue } from "./event.js";
export type { RetryOptions } from "./retry.js";
export {
  TallyError,
  TallyValidationError,
  TallyBufferFullError,
  TallyClosedError,
  TallyRejectedError,
  TallyRetriesExhaustedError,
} from "./errors.js";
export type { TallyErrorCode, ServerErrorBody } from "./errors.js";
