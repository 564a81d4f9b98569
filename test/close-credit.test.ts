import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeDue, type Invoice } from "../src/billing/index.js";
import { eventually, get } from "./helpers.js";
import { DAY, HOUR, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * Negative true-ups. A `latest` meter (stored gigabytes: the value of the newest event in the
 * period) drops when a late event with a later time and a lower value arrives, so a period is
 * now worth less than billed. Daily plan: 100 flat + 10 per GB. Periods P1 [D-3d, D-2d),
 * P2 [D-2d, D-1d), P3 [D-1d, D).
 * - acme: the negative true-up fits on P2's invoice (total stays ≥ 0): netted there.
 * - beta: it does not (P2 has no usage): P2's invoice keeps its own lines, a credit note
 *   (own number series TALLY-CN) carries the negative line; a later rise is billed from there.
 * - gamma: ended at P2, so its late reading has no next invoice: the round after its end issues
 *   a credit note alone.
 */
const D = today();
const P1 = D - 3 * DAY;
const P2 = D - 2 * DAY;
const P3 = D - DAY;
let env: CloseEnv;

const gb = (id: string, customer: string, atMs: number, value: string) => ({
  id,
  type: "storage",
  customer,
  time: iso(atMs),
  properties: { gb: value },
});

beforeAll(async () => {
  env = await startCloseEnv(`
meters:
  - { key: storage, event_type: storage, aggregation: latest, value_property: gb }
plans:
  - key: daily
    currency: usd
    interval: day
    prices:
      - { key: base, type: flat, unit_amount: 100 }
      - { key: storage, type: metered, meter: storage, unit_amount: 10 }
customers:
  - { key: acme, currency: usd, timezone: UTC }
  - { key: beta, currency: usd, timezone: UTC }
  - { key: gamma, currency: usd, timezone: UTC }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${iso(P1)}" }
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(P1)}" }
  - { key: gamma-daily, customer: gamma, plan: daily, started_at: "${iso(P1)}", ended_at: "${iso(P2)}" }
`);
});
afterAll(async () => {
  await env?.stop();
});

const brief = (d: Invoice) => ({
  kind: d.kind ?? "invoice",
  number: d.number,
  total: d.total,
  lines: d.lines.map((l) => [l.number, l.price, l.quantity, l.amount, l.period.start]),
});

describe("credit notes for negative true-ups", () => {
  let acmeP1: Invoice;
  let betaP1: Invoice;

  it("nets a negative true-up on the next invoice while its total stays ≥ 0, else issues a credit note", async () => {
    await env.send([
      gb("a1", "acme", P1 + HOUR, "50"),
      gb("a2", "acme", P2 + HOUR, "40"),
      gb("b1", "beta", P1 + HOUR, "50"),
      gb("g1", "gamma", P1 + HOUR, "50"),
    ]);
    const first = await env.closeThrough(P2);
    expect(first.errors).toEqual([]);
    expect(first.finalized).toHaveLength(3);
    acmeP1 = (await env.documents("acme-daily"))[0]!;
    betaP1 = (await env.documents("beta-daily"))[0]!;
    expect([acmeP1.total, betaP1.total]).toEqual([100 + 500, 100 + 500]);

    // Late: a later reading of P1, lower.
    await env.send([
      gb("a-late", "acme", P1 + 20 * HOUR, "45"),
      gb("b-late", "beta", P1 + 20 * HOUR, "10"),
      gb("g-late", "gamma", P1 + 20 * HOUR, "10"),
    ]);
    await eventually(
      async () =>
        (await env.usage("storage", "acme", P1, P2)) === "45" &&
        (await env.usage("storage", "beta", P1, P2)) === "10" &&
        (await env.usage("storage", "gamma", P1, P2)) === "10",
      30_000,
      "late readings countable",
    );
    // The close fails after finalizing the invoices, before their credit notes (real store,
    // injected failure): the invoice names its credit note, a draft the next run finalizes.
    const healthy = env.deps.invoices;
    const failing = Object.create(healthy) as typeof healthy;
    failing.finalize = (ids, prefix, now) =>
      prefix === "TALLY-CN"
        ? Promise.reject(new Error("crash before the credit notes"))
        : healthy.finalize(ids, prefix, now);
    env.deps.invoices = failing;
    await expect(env.closeThrough(P3)).rejects.toThrow("crash before the credit notes");
    env.deps.invoices = healthy;
    const pending = (await env.documents("beta-daily")).filter((d) => d.status === "draft");
    expect(pending.map((d) => d.kind)).toEqual(["credit_note"]);
    const gammaPending = (await env.documents("gamma-daily")).filter((d) => d.status === "draft");
    expect(gammaPending.map((d) => [d.kind, d.issued_with])).toEqual([["credit_note", null]]);
    const second = await closeDue(env.deps, Date.now());
    expect(second.errors).toEqual([]);
    expect(second.finalized.sort()).toEqual([pending[0]!.id, gammaPending[0]!.id].sort());

    // acme: 100 + 40 GB × 10 − (500 − 450) = 450: netted, no credit note.
    const acme = await env.documents("acme-daily");
    expect(acme.map(brief)).toEqual([
      brief(acmeP1),
      {
        kind: "invoice",
        number: expect.stringMatching(/^TALLY-00000[45]$/),
        total: 450,
        lines: [
          [1, "base", "1", 100, iso(P2)],
          [2, "storage", "40", 400, iso(P2)],
          [3, "storage", "45", -50, iso(P1)],
        ],
      },
    ]);
    expect(acme[1]!.credit_note).toBeUndefined();

    // beta: P2 alone is 100; the true-up is −400 (50 GB billed, 10 now): a credit note.
    const beta = await env.documents("beta-daily");
    const betaP2 = beta.find((d) => d.kind === "invoice" && d.period.start === iso(P2))!;
    const note = beta.find((d) => d.kind === "credit_note")!;
    expect(brief(betaP2)).toEqual({
      kind: "invoice",
      number: expect.stringMatching(/^TALLY-00000[45]$/),
      total: 100,
      lines: [
        [1, "base", "1", 100, iso(P2)],
        [2, "storage", "0", 0, iso(P2)],
      ],
    });
    expect(betaP2.credit_note).toBe(note.id);
    expect(note).toMatchObject({
      kind: "credit_note",
      status: "finalized",
      number: expect.stringMatching(/^TALLY-CN-00000[12]$/),
      issuer_prefix: "TALLY-CN",
      credits: [betaP1.id],
      issued_with: betaP2.id,
      currency: "USD",
      subtotal: -400,
      total: -400,
    });
    expect(note.lines).toHaveLength(1);
    expect(note.lines[0]).toMatchObject({
      number: 1,
      price: "storage",
      quantity: "10",
      amount: -400,
      period: { start: iso(P1), end: iso(P2) },
      true_up: { invoice: betaP1.id, billed_quantity: "50", billed_amount: 500 },
    });
    // gamma ended at P2: the round after its end, [P2, P3), issued the credit note alone.
    const gamma = await env.documents("gamma-daily");
    expect(gamma.map((d) => [d.kind, d.status, d.total, d.period.start])).toEqual([
      ["invoice", "finalized", 600, iso(P1)],
      ["credit_note", "finalized", -400, iso(P2)],
    ]);
    expect(gamma[1]).toMatchObject({
      credits: [gamma[0]!.id],
      issued_with: null,
      true_ups: [{ invoice: gamma[0]!.id }],
    });
    expect(gamma[1]!.lines.map((l) => [l.price, l.quantity, l.amount, l.period.start])).toEqual([
      ["storage", "10", -400, iso(P1)],
    ]);
    expect([note.number, gamma[1]!.number].sort()).toEqual(["TALLY-CN-000001", "TALLY-CN-000002"]);

    // Corrections never modify a finalized invoice; re-running issues nothing more.
    expect(await env.deps.invoices.get(betaP1.id)).toEqual(betaP1);
    expect(await env.deps.invoices.get(acmeP1.id)).toEqual(acmeP1);
    expect((await closeDue(env.deps, Date.now())).finalized).toEqual([]);
    expect(await env.deps.invoices.get(note.id)).toEqual(note);

    // Credit notes are documents of the invoice API too: readable by id, listed apart by kind.
    const byId = await get(env.edge, `/v1/invoices/${note.id}`);
    expect(byId.status).toBe(200);
    expect(byId.body).toMatchObject({
      id: note.id,
      kind: "credit_note",
      number: note.number,
      total: note.total,
    });
    const ids = (rows: { id: string }[]) => rows.map((r) => r.id).sort();
    await expect
      .poll(async () => ids((await get(env.edge, "/v1/invoices?kind=credit_note")).body.data))
      .toEqual([note.id, gamma[1]!.id].sort());
    const listed = (await get(env.edge, "/v1/invoices?kind=invoice&limit=100")).body.data as {
      kind: string;
    }[];
    expect(listed.length).toBeGreaterThan(0);
    expect(listed.every((d) => d.kind === "invoice")).toBe(true);
  });

  it("trues up again from what was billed and credited", async () => {
    // An even later reading of P1 raises it to 30 GB: billed so far 10 GB (500 − 400 = 100).
    await env.send([gb("b-later", "beta", P1 + 22 * HOUR, "30")]);
    await eventually(
      async () => (await env.usage("storage", "beta", P1, P2)) === "30",
      30_000,
      "later reading countable",
    );
    const third = await env.closeThrough(D);
    expect(third.errors).toEqual([]);
    const betaP3 = (await env.documents("beta-daily")).find((d) => d.period.start === iso(P3))!;
    expect(brief(betaP3)).toMatchObject({
      kind: "invoice",
      total: 100 + 200,
      lines: [
        [1, "base", "1", 100, iso(P3)],
        [2, "storage", "0", 0, iso(P3)],
        [3, "storage", "30", 200, iso(P1)],
      ],
    });
    expect(betaP3.lines[2]!.true_up).toEqual({
      invoice: betaP1.id,
      billed_quantity: "10",
      billed_amount: 100,
    });
  });
});
