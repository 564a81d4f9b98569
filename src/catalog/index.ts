export { CatalogStore } from "./store.js";
export type { ApplyResult } from "./store.js";
export { CatalogInputError, parseMeters, validateMeter, validateMeters } from "./file.js";
export {
  aggregations,
  gaugeAggregations,
  meterKeyPattern,
  meterSchema,
  numericAggregations,
  timeUnits,
} from "./meter.js";
export type { Aggregation, Meter, MeterDefinition, MeterFilter, TimeUnit } from "./meter.js";
