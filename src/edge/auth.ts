import { createMiddleware } from "hono/factory";
import { hasScope, type KeyStore, type Scope } from "../auth/index.js";
import { ApiError } from "../lib/errors.js";
import type { EdgeEnv } from "./context.js";

/**
 * Requires `Authorization: Bearer <key>` with a key holding `scope` (or admin).
 * 401 for a missing or unknown key, 403 for a key without the scope.
 */
export function requireScope(keys: KeyStore, scope: Scope) {
  return createMiddleware<EdgeEnv>(async (c, next) => {
    const header = c.req.header("authorization");
    if (header === undefined || !/^bearer\s+/i.test(header)) {
      throw new ApiError("unauthorized", "missing Authorization: Bearer <api key>");
    }
    const rec = keys.verify(header.replace(/^bearer\s+/i, "").trim());
    if (rec === null) throw new ApiError("unauthorized", "unknown or revoked API key");
    if (!hasScope(rec, scope)) {
      throw new ApiError("forbidden", `this API key lacks the '${scope}' scope`, {
        required: scope,
        granted: rec.scopes,
      });
    }
    c.set("apiKey", rec);
    await next();
  });
}
