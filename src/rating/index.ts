export { rate } from "./rate.js";
export { BillingPeriod, billingPeriod, resolvePeriod } from "./period.js";
export type { PlanLike, RatingInput, SubscriptionChange, UsageInput } from "./rate.js";
export { CompiledPlan, compilePlan } from "./pricing.js";
export {
  issuesFromZod,
  parseYamlExact,
  parseCatalog,
  parseSubscription,
  parseUsage,
  selectPlan,
  validatePlan,
  validateUsage,
} from "./parse.js";
export {
  catalogSchema,
  currencySchema,
  decimalField,
  discountSchema,
  duplicateKeyIssues,
  intervalSchema,
  keySchema,
  timestampSchema,
  planSchema,
  subscriptionFileSchema,
  usageSchema,
} from "./plan-schema.js";
export type {
  Catalog,
  DecimalSource,
  Discount,
  Interval,
  Plan,
  PlanInput,
  Price,
  SubscriptionFile,
  Tier,
  Usage,
} from "./plan-schema.js";
export { RatingInputError, formatIssue } from "./errors.js";
export type { RatingIssue } from "./errors.js";
export { currencyOf, minorToDecimal, supportedCurrencies } from "./currency.js";
export type { Currency } from "./currency.js";
export type { Timestamp } from "./calendar.js";
export type {
  DiscountDetail,
  LineItem,
  LineKind,
  LinePeriod,
  Proration,
  RatedInvoice,
  TierBreakdown,
} from "./types.js";
