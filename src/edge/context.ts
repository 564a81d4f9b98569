import type { ApiKeyRecord, PortalGrant } from "../auth/index.js";

/** Per-request values set by middleware. */
export interface EdgeEnv {
  Variables: {
    requestId: string;
    /** Set by API-key authentication. */
    apiKey: ApiKeyRecord;
    /** Set instead of `apiKey` when a portal token authenticated the request (usage routes only). */
    portal: PortalGrant | undefined;
  };
}
