export { CatalogStore } from "./store.js";
export type { CatalogApplyResult } from "./store.js";
export { parseCatalogDocument, validateCatalogDocument } from "./document.js";
export type { CatalogDocument, CatalogLookup } from "./document.js";
export type { ApplyResult, Versioned } from "./versioned.js";
export { VersionedCollection, kvToken } from "./versioned.js";
export { customerSchema, timezoneSchema } from "./customer.js";
export type { Customer, CustomerInput } from "./customer.js";
export { subscriptionSchema } from "./subscription.js";
export type { Subscription, SubscriptionInput } from "./subscription.js";
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
export { accountCodeSchema, accountsSchema, chartKey, priceAccount } from "./accounts.js";
export type { AccountChart, Accounts, AccountsInput } from "./accounts.js";
