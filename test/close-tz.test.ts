import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeDue, InvoiceStore, type Invoice } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { log } from "./helpers.js";
import { calls, DAY, HOUR, iso, service, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * A customer's time zone changes after some periods were invoiced. Periods start at the billing
 * anchor's local time in the customer's zone; the anchor is 2012-01-01T00:00Z: midnight in UTC,
 * 04:00 in Moscow (UTC+4 in 2012, UTC+3 without DST since 2014), so after the change days start
 * at 01:00 UTC, on any date. Two customers, daily plan of a 2400 flat fee and 2 per call:
 * - beta: period A [D-3d, D-2d) finalized under UTC, then the change: the next invoice runs from
 *   A's end to the next Moscow boundary, [D-2d, D-2d+1h), fee prorated 1/24; then whole days.
 * - acme: A finalized, and B [D-2d, D-1d) drafted under UTC when a crash stopped the close; the
 *   draft keeps its period after the change, and the next invoice runs [D-1d, D-1d+1h).
 */
const D = today();
let env: CloseEnv;

const catalog = (tz: string) => `
meters:
  - { key: calls, event_type: api_call, aggregation: count }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 2400 }
      - { key: calls, type: metered, meter: calls, unit_amount: 2 }
customers:
  - { key: acme, currency: usd, timezone: ${tz} }
  - { key: beta, currency: usd, timezone: ${tz} }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(D - 3 * DAY)}", billing_anchor: "2012-01-01T00:00:00Z" }
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(D - 3 * DAY)}", billing_anchor: "2012-01-01T00:00:00Z" }
`;

beforeAll(async () => {
  env = await startCloseEnv(catalog("UTC"));
});
afterAll(async () => {
  await env?.stop();
});

const summary = (inv: Invoice) => ({
  service: service(inv),
  period: [inv.period.start, inv.period.end],
  total: inv.total,
  status: inv.status,
});

describe("a customer's time zone changes after periods were invoiced", () => {
  it("bills every instant once: the new zone applies from the end of the last invoiced or drafted period", async () => {
    for (const c of ["acme", "beta"]) {
      await env.send([
        ...calls(`${c}-a`, c, 10, D - 3 * DAY + HOUR),
        ...calls(`${c}-b`, c, 5, D - 2 * DAY + 600_000),
        ...calls(`${c}-c`, c, 3, D - 2 * DAY + 5 * HOUR),
        ...calls(`${c}-d`, c, 4, D - DAY + 600_000),
      ]);
    }
    const first = await env.closeThrough(D - 2 * DAY);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(2);

    // A close that crashes right after storing its first draft (acme's period B, under UTC).
    const names = busNames(env.config.nats.prefix);
    const healthy = env.deps.invoices;
    // Drafts are stored several at a time: only acme's gets through before the "crash".
    env.deps.invoices = await InvoiceStore.open(env.edge.nc.jetstream(), names.invoicesBucket, 1, log, {
      beforeDraft: (d) => {
        if (d.customer !== "acme") throw new Error("crash after the first draft");
      },
      afterDraft: () => {
        throw new Error("crash after the first draft");
      },
    });
    await expect(env.closeThrough(D - DAY)).rejects.toThrow("crash after the first draft");
    env.deps.invoices = healthy;
    const drafted = (await env.documents("acme-daily")).filter((i) => i.status === "draft");
    expect(drafted.map(summary)).toEqual([
      {
        service: [iso(D - 2 * DAY), iso(D - DAY)],
        period: [iso(D - 2 * DAY), iso(D - DAY)],
        total: 2400 + 16,
        status: "draft",
      },
    ]);

    const changed = await env.apply(`
customers:
  - { key: acme, currency: usd, timezone: Europe/Moscow }
  - { key: beta, currency: usd, timezone: Europe/Moscow }
`);
    expect(changed.status).toBe(200);
    expect(env.deps.catalog.customers.get("beta")?.timezone).toBe("Europe/Moscow");

    const third = await env.closeThrough(D - 2 * DAY + HOUR);
    expect(third.errors).toEqual([]);
    expect(third.finalized).toHaveLength(1); // beta's joining period only
    const fourth = await env.closeThrough(D - DAY + HOUR);
    expect(fourth.errors).toEqual([]);
    expect(fourth.finalized).toHaveLength(3);
    // Re-running changes nothing.
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);

    const beta = await env.documents("beta-daily");
    expect(beta.map(summary)).toEqual([
      {
        service: [iso(D - 3 * DAY), iso(D - 2 * DAY)],
        period: [iso(D - 3 * DAY), iso(D - 2 * DAY)],
        total: 2400 + 10 * 2,
        status: "finalized",
      },
      {
        // From A's end to the first Moscow boundary: 1 of the day's 24 hours.
        service: [iso(D - 2 * DAY), iso(D - 2 * DAY + HOUR)],
        period: [iso(D - 3 * DAY + HOUR), iso(D - 2 * DAY + HOUR)],
        total: 2400 / 24 + 5 * 2,
        status: "finalized",
      },
      {
        service: [iso(D - 2 * DAY + HOUR), iso(D - DAY + HOUR)],
        period: [iso(D - 2 * DAY + HOUR), iso(D - DAY + HOUR)],
        total: 2400 + (3 + 4) * 2,
        status: "finalized",
      },
    ]);
    const joining = beta[1]!;
    expect(joining.lines.find((l) => l.price === "base")).toMatchObject({
      amount: 100,
      proration: { seconds: "3600", period_seconds: "86400" },
    });
    expect(joining.lines.find((l) => l.price === "calls")?.quantity).toBe(
      await env.usage("calls", "beta", D - 2 * DAY, D - 2 * DAY + HOUR),
    );

    const acme = await env.documents("acme-daily");
    expect(acme.map(summary)).toEqual([
      {
        service: [iso(D - 3 * DAY), iso(D - 2 * DAY)],
        period: [iso(D - 3 * DAY), iso(D - 2 * DAY)],
        total: 2400 + 10 * 2,
        status: "finalized",
      },
      {
        // The draft kept the UTC period it was built for.
        service: [iso(D - 2 * DAY), iso(D - DAY)],
        period: [iso(D - 2 * DAY), iso(D - DAY)],
        total: 2400 + (5 + 3) * 2,
        status: "finalized",
      },
      {
        service: [iso(D - DAY), iso(D - DAY + HOUR)],
        period: [iso(D - 2 * DAY + HOUR), iso(D - DAY + HOUR)],
        total: 2400 / 24 + 4 * 2,
        status: "finalized",
      },
    ]);
    expect(acme[1]!.id).toBe(drafted[0]!.id);
    expect(acme[1]!.cutoff).toBe(drafted[0]!.cutoff);

    // Numbers stay gapless over both customers.
    const numbers = [...beta, ...acme].map((i) => i.number).sort();
    expect(numbers).toEqual([1, 2, 3, 4, 5, 6].map((n) => `TALLY-${String(n).padStart(6, "0")}`));
  });
});
