import pMap from "p-map";
import { upcomingInvoice, type CloseDeps, type Invoice } from "../billing/index.js";
import type { Subscription, Versioned } from "../catalog/index.js";
import { dec, fmt } from "../rating/decimal.js";
import type { DeliveryLog } from "./deliveries.js";
import type { OutboundEvent, WebhookEmitter } from "./emitter.js";
import { token } from "./endpoints.js";
import { thresholdsFired } from "./metrics.js";

export interface ThresholdDeps {
  /** The close's dependencies: usage is read and priced by `upcomingInvoice`, the close's own path. */
  close: CloseDeps;
  emitter: WebhookEmitter;
  /** Where fired alerts are remembered (`alerts.<token>`). */
  deliveries: DeliveryLog;
  /** Subscriptions evaluated at once (each is one usage read). @default 8 */
  concurrency?: number;
}

export interface ThresholdReport {
  evaluated: number;
  fired: string[];
  errors: { subscription: string; message: string }[];
}

/** One threshold crossed by the current period of a subscription (pure; see {@link crossings}). */
export interface Crossing {
  /** Stable within the period: `included:<plan>:<price>:<percent>` or `spend:<amount>`. */
  key: string;
  data: Record<string, unknown>;
}

/**
 * The configured thresholds an upcoming invoice has reached (pure). Included quantity: the
 * usage lines of one price (per plan, several segments after a plan change summed; true-up
 * lines of earlier periods left out) against `percent` of their included quantity, exactly
 * (decimal, no floats). Spend: the invoice total so far in minor units against the amount.
 */
export function crossings(sub: Subscription, inv: Invoice): Crossing[] {
  const alerts = sub.usage_alerts;
  if (alerts === undefined) return [];
  const out: Crossing[] = [];
  const byPrice = new Map<
    string,
    { plan: string; price: string; meter: string; quantity: string; included: string }
  >();
  for (const l of inv.lines) {
    if (l.meter === null || l.price === null || l.true_up !== undefined || l.included_quantity === undefined)
      continue;
    const k = `${l.plan}\u0000${l.price}`;
    const cur = byPrice.get(k);
    byPrice.set(k, {
      plan: l.plan,
      price: l.price,
      meter: l.meter,
      quantity: fmt(dec(cur?.quantity ?? "0").plus(dec(l.quantity))),
      included: fmt(dec(cur?.included ?? "0").plus(dec(l.included_quantity))),
    });
  }
  for (const p of byPrice.values()) {
    if (!dec(p.included).gt(dec("0"))) continue;
    for (const percent of alerts.included_percent) {
      // quantity / included >= percent / 100, without division.
      if (
        dec(p.quantity)
          .times(dec("100"))
          .gte(dec(p.included).times(dec(percent)))
      ) {
        out.push({
          key: `included:${p.plan}:${p.price}:${percent}`,
          data: {
            kind: "included_quantity",
            percent: Number(percent),
            plan: p.plan,
            price: p.price,
            meter: p.meter,
            included_quantity: p.included,
            quantity: p.quantity,
          },
        });
      }
    }
  }
  for (const amount of alerts.spend) {
    const minor = dec(amount).times(dec("10").pow(inv.currency_exponent)).round(0, 3);
    if (dec(String(inv.total)).gte(minor)) {
      out.push({
        key: `spend:${fmt(dec(amount))}`,
        data: {
          kind: "spend",
          amount: fmt(dec(amount)),
          amount_minor: Number(fmt(minor)),
          spend_minor: inv.total,
        },
      });
    }
  }
  return out;
}

/**
 * Evaluates every subscription with `usage_alerts` at `nowMs` and raises `usage.threshold_crossed`
 * once per subscription, billing period and threshold. The event id is derived from the three
 * (so raising it again is the same webhook-id); it is emitted first and remembered after, so a
 * crash in between raises it again (at least once) and never loses it.
 */
export async function evaluateThresholds(deps: ThresholdDeps, nowMs: number): Promise<ThresholdReport> {
  const report: ThresholdReport = { evaluated: 0, fired: [], errors: [] };
  const subs = deps.close.catalog.subscriptions.list().filter((s) => s.usage_alerts !== undefined);
  await pMap(
    subs,
    async (sub: Versioned<Subscription>) => {
      try {
        const inv = await upcomingInvoice(deps.close, sub.key, nowMs);
        report.evaluated++;
        if (inv === null) return;
        for (const c of crossings(sub, inv)) {
          const t = token(sub.key, inv.period.start, c.key);
          if (await deps.deliveries.fired(t)) continue;
          const event: OutboundEvent = {
            id: `evt_usage_threshold_${t}`,
            type: "usage.threshold_crossed",
            data: {
              customer: sub.customer,
              subscription: sub.key,
              currency: inv.currency,
              period: { start: inv.period.start, end: inv.period.end },
              threshold: c.data,
              evaluated_at: new Date(nowMs).toISOString(),
            },
          };
          await deps.emitter.emit(event);
          await deps.deliveries.markFired(t, new Date(nowMs).toISOString());
          thresholdsFired.inc({ kind: String(c.data.kind) });
          report.fired.push(event.id);
        }
      } catch (err: unknown) {
        report.errors.push({ subscription: sub.key, message: (err as Error).message });
        deps.close.log.warn({ err, subscription: sub.key }, "usage alerts not evaluated");
      }
    },
    { concurrency: deps.concurrency ?? 8 },
  );
  return report;
}
