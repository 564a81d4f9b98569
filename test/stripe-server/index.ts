export {
  startStripeServer,
  RequestLog,
  type StartOptions,
  type StripeTestServer,
  type RecordedRequest,
} from "./server.js";
export { Clock } from "./ids.js";
export {
  Faults,
  type Inject429,
  type Inject5xx,
  type InjectDrop,
  type InjectLatency,
  type RateLimit,
} from "./faults.js";
export { State } from "./state.js";
export { signatureHeader, signEvent, deliverEvent, type SignedDelivery } from "./webhooks.js";
export type { Wire } from "./objects.js";
