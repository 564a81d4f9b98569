export { createStripeClient, callStripe, classifyStripeError, StripeCallError } from "./client.js";
export type { StripeClient, StripeFailure } from "./client.js";
export { RateLimiter } from "./limiter.js";
export { planPush, pushKey, lineParams, createParams, collectionOf } from "./plan.js";
export type { PushPlan, PartPlan, Collection } from "./plan.js";
export { PushStore, PushConflict } from "./push-store.js";
export type {
  StripePush,
  PushPart,
  PushStatus,
  PushStep,
  StripePayments,
  PaymentState,
} from "./push-store.js";
export { StripePusher } from "./push.js";
export type { PushDeps, PushReport } from "./push.js";
export { openStripePusher } from "./setup.js";
export { recordStripeEvent, decidePayment, paidParts } from "./webhooks.js";
export type { WebhookOutcome } from "./webhooks.js";
