export { busNames } from "./names.js";
export type { BusNames } from "./names.js";
export { ensureStreams } from "./stream.js";
export { checkPartitionCount, PartitionCountMismatch } from "./partitions.js";
export { GroupCommitPublisher, partitionOf } from "./publisher.js";
export type { PublisherOptions } from "./publisher.js";
export { Watermarks } from "./watermark.js";
