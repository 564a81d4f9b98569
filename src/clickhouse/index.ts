export {
  createClickHouse,
  createClickHouseReader,
  isPermanentInsertError,
  clickHouseErrorCode,
} from "./client.js";
export type { ClickHouseClient } from "./client.js";
export { RowBinaryWriter, RowEncodingError, insertRowBinary } from "./row-binary.js";
export { migrate, schemaVersion, isSchemaCurrent, queryRows } from "./migrate.js";
export {
  sql,
  lit,
  ident,
  migrations,
  latestSchemaVersion,
  usageAggregate,
  usageEvidence,
  usageEventPage,
  usageGaugeCarryIn,
  usageGaugeBuckets,
  usageGaugePoints,
  usageRewriteCount,
  usageTotals,
  usageTotalsRewriteCount,
  usageRollupAggregate,
  rollupFill,
  rollupFills,
  rollupTailProbe,
  rollupReadPlan,
  rollupRecordFill,
  rollupBucketMs,
  rollupReceiveMs,
  rollupDimensions,
  inListGroups,
  inLists,
  maxInListBytes,
  maxInListItems,
} from "./sql.js";
export type {
  Collapse,
  EventKey,
  SqlValue,
  Migration,
  EventFilter,
  SqlAggregation,
  UsageFilter,
  UsageSpec,
  RollupScope,
} from "./sql.js";
