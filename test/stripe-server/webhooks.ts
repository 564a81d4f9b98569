import { createHmac } from "node:crypto";

/**
 * `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, per
 * https://docs.stripe.com/webhooks#verify-manually (the scheme stripe-node 23 verifies in
 * `Webhooks.js`; `stripe.webhooks.generateTestHeaderString({ payload, secret, timestamp })` builds
 * the same string, and the test checks both agree). Signing is over the exact bytes sent, so
 * callers must deliver `payload` unchanged.
 */
export function signatureHeader(payload: string, secret: string, timestampSec: number): string {
  const v1 = createHmac("sha256", secret).update(`${timestampSec}.${payload}`, "utf8").digest("hex");
  return `t=${timestampSec},v1=${v1}`;
}

export interface SignedDelivery {
  payload: string;
  header: string;
}

/** Serialises an event once and signs those bytes. */
export function signEvent(event: unknown, secret: string, timestampSec: number): SignedDelivery {
  const payload = JSON.stringify(event, null, 2);
  return { payload, header: signatureHeader(payload, secret, timestampSec) };
}

/**
 * POSTs a signed event the way Stripe delivers it (JSON body, `Stripe-Signature` header), for
 * exercising a webhook receiver. Returns the receiver's status.
 */
export async function deliverEvent(
  url: string,
  event: unknown,
  secret: string,
  timestampSec: number,
): Promise<{ status: number; body: string }> {
  const { payload, header } = signEvent(event, secret, timestampSec);
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json; charset=utf-8", "stripe-signature": header },
    body: payload,
  });
  return { status: res.status, body: await res.text() };
}
