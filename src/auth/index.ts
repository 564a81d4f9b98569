export { KeyStore, hashKey, generateKey, hasScope, scopes } from "./keys.js";
export type { ApiKeyRecord, Scope } from "./keys.js";
