import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { DateTime } from "luxon";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  closeDue,
  invoiceId,
  InvoiceStore,
  usageSnapshotter,
  type CloseDeps,
  type Invoice,
} from "../src/billing/index.js";
import { busNames, Watermarks } from "../src/bus/index.js";
import { createClickHouse, migrate, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { ADMIN_KEY, eventually, get, log, post, startTestSink, testConfig, applyCatalog } from "./helpers.js";

// The billing half of the customer page (estimated charges, past invoices, the invoice JSON a
// portal token may read) against a real edge, sink, NATS and ClickHouse, with invoices written
// by the real close. Every expected amount is worked out by hand from the plan below.

const DAY = 86_400_000;
const TZ = "Asia/Tokyo"; // acme's periods are Tokyo days: they start at 15:00 UTC
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;
let reader: ClickHouseClient;
let deps: CloseDeps;
let watermarks: Watermarks;

const iso = (ms: number) => new Date(ms).toISOString();
/** Start of today in Tokyo: the current period is [D, D+1d); P1 and P2 are the two before. */
let D = 0;
let P1 = 0;
let P2 = 0;
const tokyoDate = (ms: number) => DateTime.fromMillis(ms, { zone: TZ }).toFormat("d LLL yyyy");

// daily: $1.00 a day; calls 2¢ each after 10 included; tokens free up to 1,000 (a graduated
// first tier priced 0), then 0.5¢ each. broken: a unit price so large that two calls overflow
// what an invoice amount may hold, so rating refuses (a pricing failure from real data).
const catalogDoc = (start: string, today: string) => `
meters:
  - { key: calls, name: API calls, event_type: api_call, aggregation: count }
  - { key: tokens, name: Tokens, event_type: llm, aggregation: sum, value_property: n }
plans:
  - key: daily
    name: Daily plan
    currency: usd
    interval: day
    prices:
      - { key: base, nickname: Base fee, type: flat, unit_amount: 100 }
      - { key: calls, nickname: API calls, type: metered, meter: calls, unit_amount: 2, included_quantity: 10 }
      - key: tokens
        nickname: Tokens
        type: metered
        meter: tokens
        billing_scheme: tiered
        tiers_mode: graduated
        tiers:
          - { up_to: 1000, unit_amount: 0 }
          - { up_to: inf, unit_amount_decimal: "0.5" }
  - key: broken
    currency: jpy
    interval: day
    prices:
      - { key: calls, type: metered, meter: calls, unit_amount: 9007199254740991 }
customers:
  - { key: acme, currency: usd, timezone: ${TZ} }
  - { key: globex, currency: usd, timezone: ${TZ} }
  - { key: umbrella, currency: jpy, timezone: ${TZ} }
subscriptions:
  - { key: acme-daily, customer: acme, plan: daily, started_at: "${start}" }
  - { key: globex-daily, customer: globex, plan: daily, started_at: "${today}" }
  - { key: umbrella-broken, customer: umbrella, plan: broken, started_at: "${today}" }
`;

function events(customer: string, prefix: string, n: number, atMs: number, type = "api_call", props = {}) {
  return Array.from({ length: n }, (_, i) => ({
    id: `${customer}-${prefix}-${i}`,
    type,
    customer,
    time: iso(atMs + i),
    properties: props,
  }));
}

/** Edge reads retry 503: another test file saturates the read user's concurrency cap on purpose. */
async function read(path: string) {
  for (let attempt = 0; ; attempt++) {
    const r = await get(edge, path);
    if (r.status !== 503 || attempt >= 20) return r;
    await new Promise((done) => setTimeout(done, 250));
  }
}

async function usageOf(customer: string, meter: string, fromMs: number, toMs: number): Promise<string> {
  const r = await read(`/v1/usage?meter=${meter}&customer=${customer}&from=${fromMs}&to=${toMs}`);
  expect(r.status).toBe(200);
  return (r.body.data[0]?.value as string | null) ?? "0";
}

async function tokenFor(customer: string): Promise<string> {
  const res = await edge.app.request("/v1/portal/tokens", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ customer, expires_in: 900 }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

async function portal(customer: string, token?: string): Promise<{ status: number; html: string }> {
  const t = token ?? (await tokenFor(customer));
  for (let attempt = 0; ; attempt++) {
    const res = await edge.app.request(`/portal?token=${encodeURIComponent(t)}`);
    const html = await res.text();
    if (res.status !== 503 || attempt >= 20) return { status: res.status, html };
    await new Promise((done) => setTimeout(done, 250));
  }
}

/** The HTML of the `<section id="…">` of a page. */
function section(html: string, id: string): string {
  const at = html.indexOf(`id="${id}"`);
  if (at < 0) return "";
  return html.slice(html.lastIndexOf("<section", at), html.indexOf("</section>", at));
}

/** The amount (minor units) and shown text of a line of the estimate, by price key. */
function line(html: string, price: string, nth = 0) {
  const rows = [...html.matchAll(/<tr data-line="\d+" data-price="([^"]+)">(.*?)<\/tr>/g)].filter(
    (m) => m[1] === price,
  );
  const row = rows[nth]?.[2] ?? "";
  const amount = /data-amount="(-?\d+)">([^<]*)</.exec(row);
  return { row, amount: amount ? Number(amount[1]) : null, shown: amount?.[2] ?? null };
}

function estimatedTotal(html: string) {
  const m =
    /<p class="est-total">Estimated total <span class="amount" data-amount="(\d+)"[^>]*>([^<]*)</.exec(html);
  return m ? { amount: Number(m[1]), shown: m[2] } : null;
}

function allowance(html: string, price: string) {
  const m = new RegExp(`<div class="allowance[^"]*" data-price="${price}"([^>]*)>([\\s\\S]*?)</div>`).exec(
    html,
  );
  if (m === null) return null;
  const attr = (name: string) => new RegExp(`data-${name}="([^"]*)"`).exec(m[1]!)?.[1] ?? null;
  return {
    used: attr("used"),
    included: attr("included"),
    percent: attr("percent"),
    over: attr("over"),
    html: m[2]!,
  };
}

let p1: Invoice;
let p2: Invoice;

beforeAll(async () => {
  // Not across a Tokyo midnight: the test's "current period" must stay current.
  const tokyoNow = () => DateTime.now().setZone(TZ);
  const untilMidnight = tokyoNow().endOf("day").toMillis() - Date.now();
  if (untilMidnight < 120_000) await new Promise((r) => setTimeout(r, untilMidnight + 2000));
  D = tokyoNow().startOf("day").toMillis();
  if (Date.now() - D < 5_000) await new Promise((r) => setTimeout(r, 5_000));
  P1 = D - 2 * DAY;
  P2 = D - DAY;

  // Listening (for the one browser check); other tests call edge.app.request.
  config = testConfig({ TALLY_HTTP_PORT: "0", TALLY_HTTP_HOST: "127.0.0.1" });
  ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  edge = await startEdge(config, log, true);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
  sink = await startTestSink(config);
  reader = createClickHouse(config.clickhouse);
  const names = busNames(config.nats.prefix);
  watermarks = new Watermarks(await edge.nc.jetstreamManager(), names, config.nats.partitions, 0, log);
  const applied = await applyCatalog(edge, catalogDoc(iso(P1), iso(D)));
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  deps = {
    catalog: edge.catalog,
    invoices: await InvoiceStore.open(edge.nc.jetstream(), names.invoicesBucket, 1, log),
    snapshots: usageSnapshotter({ clickhouse: reader, database: config.clickhouse.database, watermarks }),
    watermark: () => watermarks.current(),
    log,
    settings: { graceMs: 3_600_000, issuerPrefix: "TALLY", backfillDays: 35 },
  };

  const recent = Math.max(D + 1000, Date.now() - 60_000);
  const batch = [
    ...events("acme", "p1", 30, P1 + 3_600_000),
    ...events("acme", "p2", 12, P2 + 3_600_000),
    ...events("acme", "now", 7, recent),
    { id: "acme-tok-1", type: "llm", customer: "acme", time: iso(recent), properties: { n: "700" } },
    { id: "acme-tok-2", type: "llm", customer: "acme", time: iso(recent), properties: { n: "501.5" } },
    ...events("globex", "now", 3, recent),
    ...events("umbrella", "now", 2, recent),
  ];
  expect((await post(edge, batch)).status).toBe(202);
  await eventually(
    async () =>
      (await usageOf("acme", "calls", P1, D + DAY)) === "49" &&
      (await usageOf("acme", "tokens", D, D + DAY)) === "1201.5" &&
      (await usageOf("umbrella", "calls", D, D + DAY)) === "2",
    30_000,
    "events countable",
  );

  // Close P1, then P2, with the real close, each with a cutoff a few seconds from now (the
  // events were all received just now, so an earlier cutoff would bill them as true-ups).
  for (const end of [P2, D]) {
    const cutoffMs = Date.now() + 3000;
    deps.settings.graceMs = cutoffMs - end;
    await eventually(
      async () => (await watermarks.current()) >= cutoffMs,
      30_000,
      "watermark past the cutoff",
    );
    const report = await closeDue(deps, Date.now());
    expect(report.errors).toEqual([]);
    expect(report.finalized).toHaveLength(1);
  }
  p1 = (await deps.invoices.get(invoiceId("acme-daily", iso(P1))))!;
  p2 = (await deps.invoices.get(invoiceId("acme-daily", iso(P2))))!;
  expect([p1.status, p2.status]).toEqual(["finalized", "finalized"]);
  // The edge lists invoices from its summary index (a KV watch): wait until it has both.
  await eventually(
    async () => (await get(edge, "/v1/invoices?customer=acme")).body.data.length === 2,
    10_000,
    "invoices listed",
  );
});

afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
  await reader?.close();
});

describe("customer page: estimated charges and past invoices", () => {
  it("shows the current period's estimate, line by line, with allowance progress", async () => {
    const { status, html } = await portal("acme");
    expect(status).toBe(200);
    // Without ?tz= the usage panels use the customer's own zone too (Tokyo, UTC+9), not UTC.
    expect(html).toMatch(/class="wm">Up to date as of <time[^>]*>[^<]*GMT\+9<\/time>/);
    const billing = section(html, "billing");
    expect(billing).toContain("Estimated charges");
    expect(billing).toContain("An estimate from the usage recorded so far");
    expect(billing).toContain("It can change until the billing period closes");
    // The period is today in Tokyo (acme's zone), not in UTC.
    expect(billing).toContain(`Daily plan · <span class="period">${tokyoDate(D)}</span>`);
    // By hand: base 100¢; calls 7 of 10 included → 0¢; tokens 1,201.5 − 1,000 free = 201.5 ×
    // 0.5¢ = 100.75 → 101¢ (one rounding, half up). Total 201¢.
    expect(line(billing, "base")).toMatchObject({ amount: 100, shown: "$1.00" });
    expect(line(billing, "calls")).toMatchObject({ amount: 0, shown: "$0.00" });
    expect(line(billing, "tokens")).toMatchObject({ amount: 101, shown: "$1.01" });
    expect(line(billing, "tokens").row).toContain("1,201.5");
    expect(estimatedTotal(billing)).toEqual({ amount: 201, shown: "$2.01" });

    // Allowances from the plan: calls' included_quantity, tokens' free first tier.
    const calls = allowance(billing, "calls");
    expect(calls).toMatchObject({ used: "7", included: "10", percent: "70", over: null });
    expect(calls?.html).toContain(
      '<progress max="10" value="7" aria-label="API calls: used 7 of 10 included (70%)"',
    );
    const tokens = allowance(billing, "tokens");
    expect(tokens).toMatchObject({ used: "1201.5", included: "1000", percent: "120", over: "201.5" });
    expect(tokens?.html).toContain("over by 201.5");
    expect(tokens?.html).toContain(
      'aria-label="Tokens: used 1,201.5 of 1,000 included (120%), over by 201.5"',
    );
    // A flat fee has no allowance.
    expect(allowance(billing, "base")).toBeNull();
    // Usage panels are still there.
    expect(html).toContain('data-meter="calls"');
  });

  it("lists past invoices newest first with their numbers and totals, each linked to its JSON", async () => {
    const token = await tokenFor("acme");
    const { html } = await portal("acme", token);
    const list = section(html, "invoices");
    expect(list).toContain("Showing 1–2 of 2 invoices, newest first.");
    const rows = [...list.matchAll(/<tr data-invoice="(inv_[0-9a-f]+)">(.*?)<\/tr>/g)];
    expect(rows.map((r) => r[1])).toEqual([p2.id, p1.id]);
    // By hand: P2 = 100 + (12 − 10) × 2 = 104¢; P1 = 100 + (30 − 10) × 2 = 140¢.
    expect(rows[0]![2]).toContain(`>${p2.number}</a>`);
    expect(rows[0]![2]).toContain(`<td>${tokyoDate(P2)}</td>`);
    expect(rows[0]![2]).toContain('data-amount="104">$1.04<');
    expect(rows[1]![2]).toContain(`>${p1.number}</a>`);
    expect(rows[1]![2]).toContain('data-amount="140">$1.40<');
    expect([p1.number, p2.number]).toEqual(["TALLY-000001", "TALLY-000002"]);
    expect(rows[0]![2]).toContain(`datetime="${p2.finalized_at}"`);

    const href = /<a href="([^"]+)">/.exec(rows[0]![2]!)![1]!.replace(/&amp;/g, "&");
    expect(href).toBe(`/portal/invoices/${p2.id}?token=${encodeURIComponent(token)}`);
    const res = await edge.app.request(href);
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const json = (await res.json()) as Invoice;
    expect(json).toMatchObject({ id: p2.id, number: "TALLY-000002", total: 104, customer: "acme" });
  });

  it("never shows another customer's invoice: the same 404 as an unknown id", async () => {
    const globex = await tokenFor("globex");
    const other = await edge.app.request(`/portal/invoices/${p1.id}?token=${encodeURIComponent(globex)}`);
    expect(other.status).toBe(404);
    const body = JSON.stringify(await other.json());
    expect(body).not.toContain("acme");
    expect(body).not.toContain("TALLY-");
    const unknown = await edge.app.request(
      `/portal/invoices/inv_${"0".repeat(24)}?token=${encodeURIComponent(globex)}`,
    );
    expect(unknown.status).toBe(404);
    expect(
      (await edge.app.request(`/portal/invoices/..%2Fx?token=${encodeURIComponent(globex)}`)).status,
    ).toBe(404);
    // No token, or a bad one: 401.
    expect((await edge.app.request(`/portal/invoices/${p1.id}`)).status).toBe(401);
    expect((await edge.app.request(`/portal/invoices/${p1.id}?token=tp1.bogus.x`)).status).toBe(401);
    // globex's page lists none of acme's invoices.
    const page = await portal("globex", globex);
    expect(page.html).not.toContain(p1.id);
    expect(page.html).not.toContain("TALLY-0000");
    expect(section(page.html, "invoices")).toContain("No invoices yet.");
    // A draft (may still be rebuilt) is not shown either, even to its own customer.
    const draft: Invoice = {
      ...p1,
      id: invoiceId("acme-daily", "2000-01-01T00:00:00.000Z"),
      status: "draft",
      number: null,
      finalized_at: null,
    };
    await deps.invoices.putDraft(draft);
    const acme = await tokenFor("acme");
    expect(
      (await edge.app.request(`/portal/invoices/${draft.id}?token=${encodeURIComponent(acme)}`)).status,
    ).toBe(404);
    expect((await portal("acme", acme)).html).not.toContain(draft.id);
  });

  it("shows pending true-ups of late usage for an earlier period in the estimate", async () => {
    // Three calls for P2 that arrive after P2 was invoiced.
    expect((await post(edge, events("acme", "late", 3, P2 + 7_200_000))).status).toBe(202);
    await eventually(async () => (await usageOf("acme", "calls", P2, D)) === "15", 30_000, "late calls");
    const billing = section((await portal("acme")).html, "billing");
    expect(billing).toContain("Late usage from earlier periods");
    // By hand: P2 now (15 − 10) × 2 = 10¢, billed 4¢ → a 6¢ true-up, with P2 as its period.
    const late = line(billing, "calls", 1);
    expect(late).toMatchObject({ amount: 6, shown: "$0.06" });
    expect(late.row).toContain(`<span class="sub">${tokyoDate(P2)} · 12 billed before</span>`);
    expect(estimatedTotal(billing)).toEqual({ amount: 207, shown: "$2.07" });
  });

  it("still renders the page when pricing fails, with a clear message in place of the estimate", async () => {
    const { status, html } = await portal("umbrella");
    expect(status).toBe(200);
    // Usage panels as usual.
    expect(html).toMatch(/data-meter="calls"[^>]*>[\s\S]*?data-value="2"/);
    const billing = section(html, "billing");
    expect(billing).toContain('role="alert"');
    expect(billing).toContain("Estimated charges for this plan are unavailable right now");
    expect(estimatedTotal(billing)).toBeNull();
    expect(section(html, "invoices")).toContain("No invoices yet.");
  });

  it("re-prices the estimate over the page's stream after new usage", async () => {
    const token = await tokenFor("acme");
    const res = await edge.app.request(`/portal/stream?token=${encodeURIComponent(token)}`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const seen = (re: RegExp) => Promise.resolve(re.test(text));
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += decoder.decode(value, { stream: true });
      }
    })();
    try {
      await eventually(() => seen(/event: panel/), 15_000, "first panels");
      // Five more calls: 12 of 10 included → 2 × 2¢ = 4¢ more: 207 + 4 = 211¢.
      const sentAt = Date.now();
      expect((await post(edge, events("acme", "live", 5, Date.now() - 1000))).status).toBe(202);
      await eventually(
        () => seen(/event: billing\ndata: .*data-amount=\\"211\\"/),
        20_000,
        "the estimate re-priced on the stream",
      );
      expect(Date.now() - sentAt).toBeLessThan(15_000);
    } finally {
      await reader.cancel();
      await pump.catch(() => undefined);
    }
  });

  it("in Chromium on a phone: renders without script errors or sideways scrolling, and follows live re-pricing", async () => {
    const chromiumPath = "/usr/bin/chromium";
    if (!existsSync(chromiumPath))
      throw new Error(`${chromiumPath} is missing: run node scripts/bootstrap.mjs`);
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 375, height: 740 }, isMobile: true });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(m.text());
      });
      await page.goto(
        `http://127.0.0.1:${edge.port}/portal?token=${encodeURIComponent(await tokenFor("acme"))}`,
      );
      const total = page.locator("#billing .est-total .amount");
      expect(await total.getAttribute("data-amount")).toBe("211");
      await expect.poll(() => page.locator("#live").textContent(), { timeout: 10_000 }).toMatch(/^Live/);
      // Three more calls: 15 of 10 included → 3 × 2¢ more than at 12: 211 + 6 = 217¢.
      expect((await post(edge, events("acme", "browser", 3, Date.now() - 1000))).status).toBe(202);
      await expect.poll(() => total.textContent(), { timeout: 15_000, interval: 100 }).toBe("$2.17");
      expect(
        await page.locator('#billing .allowance[data-price="calls"] progress').getAttribute("aria-label"),
      ).toBe("API calls: used 15 of 10 included (150%), over by 5");
      const overflow = await page.evaluate<number>(
        "document.documentElement.scrollWidth - window.innerWidth",
      );
      expect(overflow).toBeLessThanOrEqual(0);
      const artifacts = join(import.meta.dirname, "..", "test-artifacts");
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: join(artifacts, "portal-billing-phone.png"), fullPage: true });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
