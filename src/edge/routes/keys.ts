import type { Hono } from "hono";
import { z } from "zod";
import { scopes } from "../../auth/index.js";
import { ApiError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { authenticate, requireScope } from "../auth.js";
import { newSession, parseSessionId, renderStripeError } from "../compat/index.js";
import type { EdgeEnv } from "../context.js";
import { toApiError } from "../errors.js";
import { parseWith } from "../params.js";

const createKey = z
  .object({
    name: z.string().min(1).max(128),
    scopes: z.array(z.enum(scopes)).min(1),
  })
  .strict();

/**
 * API keys (`/v1/keys`, admin) and Stripe meter event sessions
 * (`POST /v2/billing/meter_event_session`), which are short-lived scope-less keys.
 */
export function mountKeyRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const { keys, log } = deps;
  const now = deps.now ?? Date.now;

  app.post("/v1/keys", requireScope(keys, "admin"), async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      throw new ApiError("invalid_request", "body is not valid JSON");
    }
    const input = parseWith(createKey, body);
    const { key, record } = await keys.create(input.name, input.scopes);
    log.info({ keyId: record.id, scopes: record.scopes }, "api key created");
    return c.json({ key, ...record }, 201);
  });
  app.get("/v1/keys", requireScope(keys, "admin"), (c) => c.json({ data: keys.list() }));
  app.delete("/v1/keys/:id", requireScope(keys, "admin"), async (c) => {
    if (!(await keys.revoke(c.req.param("id")))) throw new ApiError("not_found", "no key with this id");
    return c.body(null, 204);
  });

  // A session is a key record with no scopes whose id names its parent and expiry (compat/stripe.ts).
  app.post("/v2/billing/meter_event_session", async (c) => {
    try {
      const parent = authenticate(keys, c.req.header("authorization"), "ingest");
      const nowMs = now();
      // Sweep expired sessions (they are already refused; this only keeps the key store small).
      for (const rec of keys.list()) {
        const s = parseSessionId(rec.id);
        if (s !== null && s.expiresMs < nowMs) await keys.revoke(rec.id);
      }
      const session = newSession(parent.id, nowMs);
      await keys.put(session.token, `stripe meter event session of ${parent.id}`, [], session.id);
      return c.json({
        id: session.id,
        object: "v2.billing.meter_event_session",
        authentication_token: session.token,
        created: new Date(nowMs).toISOString(),
        expires_at: new Date(session.expiresMs).toISOString(),
        livemode: false,
      });
    } catch (err: unknown) {
      return renderStripeError(c, toApiError(err, log, c));
    }
  });
}
