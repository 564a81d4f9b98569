export { busNames } from "./names.js";
export type { BusNames } from "./names.js";
export { ensureStreams } from "./stream.js";
export { checkPartitionCount, PartitionCountMismatch } from "./partitions.js";
export { GroupCommitPublisher, partitionOf } from "./publisher.js";
export type { PublisherOptions } from "./publisher.js";
export { Watermarks } from "./watermark.js";
export type { WatermarkStatus } from "./watermark.js";
export {
  DeadLetterLog,
  inspectDeadLetters,
  ackFloor,
  partitionOfSubject,
  stateOf,
  storedDeadLetterSeqs,
  summarize,
} from "./dead-letters.js";
export type { DeadLetter, DeadLetterState, InspectedDeadLetter, Resolution } from "./dead-letters.js";
