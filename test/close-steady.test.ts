import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeDue } from "../src/billing/index.js";
import { DAY, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * The close runs every minute. Between period ends it must find "nothing due" without reading a
 * subscription's past invoices again: each read is a NATS round trip, and a subscription with a
 * year of monthly invoices would cost 12 reads per minute. Six subscriptions billed daily since
 * D-6d: the first close finalizes 5 invoices each; later runs read no invoice, until a catalog
 * change (another rule may apply) makes the close walk the chains again.
 */
const D = today();
let env: CloseEnv;
let reads = 0;

beforeAll(async () => {
  const subs = Array.from(
    { length: 6 },
    (_, i) => `  - { key: s${i}, customer: c${i}, plan: daily, started_at: "${iso(D - 6 * DAY)}" }`,
  );
  const customers = Array.from({ length: 6 }, (_, i) => `  - { key: c${i}, currency: usd, timezone: UTC }`);
  env = await startCloseEnv(`
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2 }
customers:
${customers.join("\n")}
subscriptions:
${subs.join("\n")}
`);
  // Count every invoice read the close makes (the store's two read paths).
  const store = env.deps.invoices;
  const get = store.get.bind(store);
  store.get = (id) => {
    reads++;
    return get(id);
  };
});
afterAll(async () => {
  await env?.stop();
});

describe("the close between period ends", () => {
  it("finds nothing due without reading past invoices again; a catalog change makes it walk the chains once", async () => {
    const first = await env.closeThrough(D - DAY);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(6 * 5);

    reads = 0;
    for (let run = 0; run < 3; run++) {
      const r = await closeDue(env.deps, Date.now());
      expect(r.finalized).toEqual([]);
      expect(r.errors).toEqual([]);
    }
    expect(reads).toBe(0);

    // A new customer version (here its name) may change the rule: every chain of that customer
    // is walked again, once, and still nothing is due.
    const changed = await env.apply(`
customers:
  - { key: c0, name: Renamed, currency: usd, timezone: UTC }
`);
    expect(changed.status).toBe(200);
    await expect.poll(() => env.deps.catalog.customers.get("c0")?.name).toBe("Renamed");
    reads = 0;
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);
    expect(reads).toBe(5); // s0's five invoices
    reads = 0;
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);
    expect(reads).toBe(0);
  });
});
