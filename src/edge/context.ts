import type { ApiKeyRecord } from "../auth/index.js";

/** Per-request values set by middleware. */
export interface EdgeEnv {
  Variables: {
    requestId: string;
    apiKey: ApiKeyRecord;
  };
}
