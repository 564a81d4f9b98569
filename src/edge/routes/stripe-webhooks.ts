import type { Hono } from "hono";
import Stripe from "stripe";
import { paidParts, recordStripeEvent } from "../../connectors/stripe/index.js";
import { webhookEvents } from "../../connectors/stripe/metrics.js";
import { ApiError } from "../../lib/errors.js";
import { invoicePaid } from "../../webhooks/events.js";
import type { EdgeDeps } from "../app.js";
import { readBodyLimited } from "../body.js";
import type { EdgeEnv } from "../context.js";

/**
 * Largest webhook body read. An `invoice.*` event embeds the invoice with at most its first 10
 * lines (the rest are paged), so real events are a few tens of kB; anything far larger is not
 * Stripe and is refused before it is read.
 */
const maxWebhookBytes = 512 * 1024;

/**
 * `POST /v1/webhooks/stripe`: Stripe's payment events for the invoices Tally pushed. No API
 * key: the `Stripe-Signature` header (HMAC of the exact raw body with TALLY_STRIPE_WEBHOOK_SECRET,
 * within the SDK's 5-minute tolerance) is the authentication, checked by the SDK's
 * `webhooks.constructEvent` on the raw bytes BEFORE anything is parsed or recorded.
 * Without a configured secret the route does not exist (404), so unsigned events can never be
 * recorded. Duplicate and out-of-order deliveries are harmless (connectors/stripe/webhooks.ts).
 */
export function mountStripeWebhookRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const secret = deps.config.stripe.webhookSecret;
  const store = deps.invoices.push;
  if (secret === undefined || store === undefined) return;
  app.post("/v1/webhooks/stripe", async (c) => {
    const header = c.req.header("stripe-signature");
    if (header === undefined) {
      webhookEvents.inc({ outcome: "rejected" });
      throw new ApiError("invalid_request", "missing Stripe-Signature header", [
        { field: "stripe-signature", code: "missing", message: "Stripe signs every webhook" },
      ]);
    }
    const raw = Buffer.from(await readBodyLimited(c, maxWebhookBytes));
    let event: Stripe.Event;
    try {
      event = Stripe.webhooks.constructEvent(raw, header, secret);
    } catch (err: unknown) {
      webhookEvents.inc({ outcome: "rejected" });
      if (!(err instanceof Stripe.errors.StripeSignatureVerificationError)) throw err;
      deps.log.warn({ reason: err.message }, "stripe webhook signature rejected");
      throw new ApiError("invalid_request", "Stripe-Signature does not verify", [
        { field: "stripe-signature", code: "invalid_signature", message: "signature verification failed" },
      ]);
    }
    const outcome = await recordStripeEvent(store, event);
    deps.log.info({ event: event.id, type: event.type, outcome }, "stripe webhook");
    // invoice.paid out once every part is paid. Raised before answering Stripe, so a failure
    // here (500) makes Stripe redeliver and the event is raised then (its id dedupes a repeat).
    const tallyInvoice = (event.data.object as { metadata?: Record<string, string> }).metadata?.tally_invoice;
    if (event.type === "invoice.paid" && outcome !== "ignored" && tallyInvoice && deps.webhooks) {
      const parts = await paidParts(store, tallyInvoice);
      if (parts !== null) await deps.webhooks.emitter.emit(invoicePaid(tallyInvoice, parts));
    }
    return c.json({ received: true, outcome });
  });
}
