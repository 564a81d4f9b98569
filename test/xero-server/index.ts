export {
  startXeroServer,
  RequestLog,
  type StartOptions,
  type XeroTestServer,
  type RecordedRequest,
} from "./server.js";
export {
  Faults,
  Limits,
  type Inject429,
  type Inject5xx,
  type InjectDrop,
  type InjectLatency,
  type LimitOptions,
} from "./faults.js";
export { State, defaultChart, type ManualJournalRec, type AccountRec, type OrgOptions } from "./state.js";
