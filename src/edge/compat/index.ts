import type { Hono } from "hono";
import type { EdgeDeps } from "../app.js";
import type { EdgeEnv } from "../context.js";
import { handleLago, renderLagoError } from "./lago.js";
import { handleOpenMeter, isCloudEventsContentType, renderOpenMeterError } from "./openmeter.js";
import { readBody, vendorRoute } from "./pipeline.js";
import { renderStripeError, stripeRoutes } from "./stripe.js";

/**
 * Drop-in ingest for clients written against OpenMeter, Stripe meter events and Lago: point
 * them at Tally's base URL with a Tally API key (scope `ingest`) as their bearer key.
 * Every route maps the vendor's events onto Tally events and takes the same path as
 * `POST /v1/events` (validation, JetStream ack before 2xx, dedup by id); answers and errors
 * use the vendor's shapes. Field mappings: docs/compat.md.
 */
export function mountCompatRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  // OpenMeter and Lago share this path. CloudEvents content types are OpenMeter; plain JSON is
  // Lago when it is Lago's `{ "event": ... }` envelope, otherwise OpenMeter (CloudEvents).
  app.post(
    "/api/v1/events",
    vendorRoute(deps, renderOpenMeterError, async (c) => {
      const body = await readBody(deps, c);
      if (!isCloudEventsContentType(c.req.header("content-type")) && isLagoEnvelope(body)) {
        return vendorRoute(deps, renderLagoError(false), (c2) => handleLago(deps, c2, body, false))(c);
      }
      return handleOpenMeter(deps, c, body);
    }),
  );
  app.post(
    "/api/v1/events/batch",
    vendorRoute(deps, renderLagoError(true), async (c) => handleLago(deps, c, await readBody(deps, c), true)),
  );

  app.post(
    "/v1/billing/meter_events",
    vendorRoute(deps, renderStripeError, (c) => stripeRoutes.meterEventV1(deps, c)),
  );
  app.post(
    "/v2/billing/meter_event_session",
    vendorRoute(deps, renderStripeError, (c) => stripeRoutes.createSession(deps, c)),
  );
  app.post(
    "/v2/billing/meter_event_stream",
    vendorRoute(deps, renderStripeError, (c) => stripeRoutes.meterEventStream(deps, c)),
  );
}

/**
 * True when a JSON body is a Lago envelope: an object whose first key is `event`, or that has
 * an `"event"` key and no CloudEvents `"specversion"`. Decided on the raw text, before the
 * caller is authenticated, so the 401 comes in the right vendor's shape without parsing JSON
 * for unauthenticated clients.
 */
function isLagoEnvelope(body: Uint8Array): boolean {
  const head = Buffer.from(body.subarray(0, 4096)).toString("utf8");
  if (/^\s*\{\s*"event"\s*:/.test(head)) return true;
  if (!/^\s*\{/.test(head)) return false;
  const text = body.length <= 4096 ? head : Buffer.from(body).toString("utf8");
  return /"event"\s*:/.test(text) && !/"specversion"\s*:/.test(text);
}
