import pMap from "p-map";
import type { Invoice, InvoiceStore } from "../billing/index.js";
import type { WebhookEmitter } from "./emitter.js";
import { invoiceFinalized } from "./events.js";
import { emitAll } from "./outbox.js";

/**
 * Raises `invoice.finalized` again for every document finalized at or after `sinceIso`, as the
 * invoice summaries show them. The close role calls it when its previous run died (its marker
 * was still set): that run may have finalized a numbering batch and been killed before the
 * batch's events were in the outbox. Events already raised are raised again with the same ids;
 * the fan-out sends nothing twice for a delivery already attempted (see dispatcher.ts).
 * Resolves with how many it raised.
 */
export async function reraiseFinalizedSince(
  invoices: InvoiceStore,
  emitter: WebhookEmitter,
  sinceIso: string,
): Promise<number> {
  const index = await invoices.index();
  let ids: string[];
  try {
    ids = index
      .list({ status: "finalized" }, Number.MAX_SAFE_INTEGER)
      .data.filter((s) => s.finalized_at !== null && s.finalized_at >= sinceIso)
      .map((s) => s.id);
  } finally {
    index.stop();
  }
  const docs = await pMap(ids, (id) => invoices.get(id), { concurrency: 64 });
  const finalized = docs.filter((d): d is Invoice => d !== null && d.status === "finalized");
  await emitAll(emitter, finalized.map(invoiceFinalized));
  return finalized.length;
}
