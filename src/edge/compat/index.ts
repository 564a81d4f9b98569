/**
 * Drop-in ingest for clients written against OpenMeter, Stripe meter events and Lago: pure
 * adapters (vendor body → Tally raw events or field errors, ApiError → the vendor's shape) run
 * by the one ingest path (`../ingest.ts`); routes in `../routes/ingest.ts`. Field mappings:
 * docs/compat.md.
 */
export { isLagoEnvelope, lagoAdapter, renderLagoError } from "./lago.js";
export {
  cloudEventId,
  isCloudEventsContentType,
  openMeterAdapter,
  reasons,
  renderOpenMeterError,
} from "./openmeter.js";
export {
  newSession,
  parseSessionId,
  renderStripeError,
  sessionTtlMs,
  StripeSessionExpired,
  stripeStreamAdapter,
  stripeV1Adapter,
  v1EventId,
  v2EventId,
} from "./stripe.js";
