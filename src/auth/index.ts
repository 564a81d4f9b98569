export { KeyStore, hashKey, generateKey, hasScope, scopes } from "./keys.js";
export type { ApiKeyRecord, Scope } from "./keys.js";
export { PortalTokens, maxPortalTokenSeconds, portalTokenPrefix } from "./portal-tokens.js";
export type { PortalGrant } from "./portal-tokens.js";
