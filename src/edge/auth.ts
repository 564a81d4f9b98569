import { createMiddleware } from "hono/factory";
import { hasScope, type ApiKeyRecord, type KeyStore, type Scope } from "../auth/index.js";
import { ApiError } from "../lib/errors.js";
import type { EdgeEnv } from "./context.js";

/**
 * The bearer token of an `Authorization` header. 401 when the header is missing or uses another
 * scheme (a client sending `Basic ...` is told what is wrong, not that the header is missing).
 */
export function bearerToken(header: string | undefined): string {
  if (header === undefined || header.trim() === "") {
    throw new ApiError("unauthorized", "missing Authorization: Bearer <api key>");
  }
  const m = /^bearer(?:\s+(.*))?$/is.exec(header.trim());
  if (m === null) {
    throw new ApiError("unauthorized", "Authorization must use the Bearer scheme: Bearer <api key>");
  }
  return (m[1] ?? "").trim();
}

/**
 * The key record for an `Authorization` header, checked against `scope`: 401 for a missing or
 * unknown key, 403 for a key without the scope. Reads headers only, never the body.
 */
export function authenticate(keys: KeyStore, header: string | undefined, scope: Scope): ApiKeyRecord {
  const rec = keys.verify(bearerToken(header));
  if (rec === null) throw new ApiError("unauthorized", "unknown or revoked API key");
  if (!hasScope(rec, scope)) {
    throw new ApiError("forbidden", `this API key lacks the '${scope}' scope`, {
      required: scope,
      granted: rec.scopes,
    });
  }
  return rec;
}

/** Requires `Authorization: Bearer <key>` with a key holding `scope` (or admin); see {@link authenticate}. */
export function requireScope(keys: KeyStore, scope: Scope) {
  return createMiddleware<EdgeEnv>(async (c, next) => {
    c.set("apiKey", authenticate(keys, c.req.header("authorization"), scope));
    await next();
  });
}
