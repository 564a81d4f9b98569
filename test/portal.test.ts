import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClickHouse, migrate } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { ADMIN_KEY, eventually, guid, log, startTestSink, testConfig } from "./helpers.js";

// The customer usage page in real headless Chromium (Debian's, driven by playwright-core)
// against a listening edge, a sink and the suite's real NATS and ClickHouse.

const chromiumPath = "/usr/bin/chromium";
const artifacts = join(import.meta.dirname, "..", "test-artifacts");

let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let browser: Browser;
let base: string;

const acme = `acme-${guid()}`;
const globex = `globex-${guid()}`;

async function api(path: string, init: RequestInit = {}) {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${ADMIN_KEY}`,
      "content-type": "application/json",
      ...(init.headers ?? {}),
    },
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function send(customer: string, n: number, props: (i: number) => Record<string, string> = () => ({})) {
  const events = Array.from({ length: n }, (_, i) => ({
    id: guid(),
    type: "api_call",
    customer,
    properties: { tokens: "1.5", user: "u1", region: "us", seats: "3", status: "ok", ...props(i) },
  }));
  expect((await api("/v1/events", { method: "POST", body: JSON.stringify(events) })).status).toBe(202);
}

async function apiValue(customer: string, meter: string): Promise<string> {
  const r = await api(`/v1/usage?meter=${meter}&customer=${encodeURIComponent(customer)}`);
  return r.body.data[0].value as string;
}

async function tokenFor(customer: string): Promise<string> {
  const r = await api("/v1/portal/tokens", {
    method: "POST",
    body: JSON.stringify({ customer, expires_in: 900 }),
  });
  expect(r.status).toBe(201);
  return r.body.token as string;
}

beforeAll(async () => {
  if (!existsSync(chromiumPath))
    throw new Error(`${chromiumPath} is missing: run node scripts/bootstrap.mjs (installs Debian chromium)`);
  config = testConfig({
    TALLY_HTTP_PORT: "0",
    TALLY_HTTP_HOST: "127.0.0.1",
    TALLY_USAGE_STREAM_INTERVAL_MS: "250",
  });
  const ch = createClickHouse(config.clickhouse);
  await migrate(ch, config.clickhouse.database);
  await ch.close();
  edge = await startEdge(config, log, true);
  await edge.keys.put(ADMIN_KEY, "test admin", ["admin"]);
  sink = await startTestSink(config);
  base = `http://127.0.0.1:${edge.port}`;
  // Eight meters: more than the six connections a browser opens per origin.
  const catalog = `meters:
  - { key: calls, name: API calls, event_type: api_call, aggregation: count }
  - { key: tokens, name: Tokens, event_type: api_call, aggregation: sum, value_property: tokens, unit: tokens }
  - { key: biggest, name: Largest call, event_type: api_call, aggregation: max, value_property: tokens }
  - { key: smallest, name: Smallest call, event_type: api_call, aggregation: min, value_property: tokens }
  - { key: users, name: Users, event_type: api_call, aggregation: unique_count, value_property: user }
  - { key: eu_calls, name: EU calls, event_type: api_call, aggregation: count, filters: [{ property: region, equals: eu }] }
  - { key: seats, name: Seats, event_type: api_call, aggregation: peak, value_property: seats }
  - { key: errors, name: Errors, event_type: api_call, aggregation: count, filters: [{ property: status, equals: error }] }
`;
  const applied = await fetch(`${base}/v1/catalog`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
    body: catalog,
  });
  expect(applied.status).toBe(200);
  await send(acme, 7);
  await send(globex, 2);
  await eventually(async () => (await apiValue(acme, "calls")) === "7", 20_000, "acme's events countable");
  await eventually(
    async () => (await apiValue(globex, "calls")) === "2",
    20_000,
    "globex's events countable",
  );
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await sink?.stop();
  await edge?.stop();
});

describe("customer usage page", () => {
  it("shows the numbers the API returns, then updates every one of 8 panels live after new events", async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    const streams: string[] = [];
    page.on("request", (r) => {
      if (r.url().includes("stream")) streams.push(r.url());
    });
    await page.goto(`${base}/portal?token=${encodeURIComponent(await tokenFor(acme))}`);
    expect(await page.locator("h1").textContent()).toContain(acme);
    const meters = ["calls", "tokens", "biggest", "smallest", "users", "eu_calls", "seats", "errors"];
    const shown = (m: string) => page.locator(`[data-meter="${m}"] .value`).getAttribute("data-value");
    const before: Record<string, string | null> = {};
    for (const m of meters) {
      before[m] = await shown(m);
      expect(before[m], m).toBe(await apiValue(acme, m));
    }
    expect(await page.locator('[data-meter="tokens"] .value').textContent()).toBe("10.5");
    await expect.poll(() => page.locator("#live").textContent(), { timeout: 10_000 }).toMatch(/^Live/);
    expect(await page.locator('[data-meter="calls"] .wm time').getAttribute("datetime")).toMatch(
      /^\d{4}-\d\d-\d\dT/,
    );

    // Every meter moves: more calls and tokens, a larger and a smaller call, new users, EU
    // calls, more seats, errors.
    await send(acme, 1000, (i) => ({
      tokens: i === 0 ? "100" : i === 1 ? "0.5" : "1.5",
      user: `u${(i % 4) + 2}`,
      region: "eu",
      seats: "9",
      status: i % 10 === 0 ? "error" : "ok",
    }));
    const sentAt = Date.now();
    const after: Record<string, string> = {
      calls: "1007",
      tokens: "1608",
      biggest: "100",
      smallest: "0.5",
      users: "5",
      eu_calls: "1000",
      seats: "9",
      errors: "100",
    };
    for (const m of meters) {
      await expect.poll(() => shown(m), { timeout: 15_000, interval: 50 }).toBe(after[m]);
      expect(after[m], m).not.toBe(before[m]);
    }
    const shownAfterMs = Date.now() - sentAt;
    for (const m of meters) expect(await apiValue(acme, m), m).toBe(after[m]);
    const calls = page.locator('[data-meter="calls"] .value');
    expect(await calls.textContent()).toBe("1,007");
    expect(shownAfterMs).toBeLessThan(5_000);
    // One connection for the whole page, whatever the number of meters.
    expect(streams.map((n) => new URL(n).pathname)).toEqual(["/portal/stream"]);

    // Accessible chart: an image with a name, and the same numbers as a table.
    const svg = page.locator('[data-meter="calls"] svg.chart');
    expect(await svg.getAttribute("role")).toBe("img");
    expect(await page.locator('[data-meter="calls"] svg.chart > title').textContent()).toContain(
      "API calls per day",
    );
    expect(await page.locator('[data-meter="calls"] table td', { hasText: "1,007" }).count()).toBe(1);

    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, "portal.png"), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it("a token for one customer never shows another's data, whatever the URL says", async () => {
    const page = await browser.newPage();
    const token = await tokenFor(globex);
    await page.goto(`${base}/portal?token=${encodeURIComponent(token)}&customer=${encodeURIComponent(acme)}`);
    expect(await page.locator("h1").textContent()).toContain(globex);
    expect(await page.content()).not.toContain(acme);
    expect(await page.locator('[data-meter="calls"] .value').getAttribute("data-value")).toBe("2");
    // The page's own stream and panel endpoints refuse the other customer.
    const status = await page.evaluate(
      async ([t, other]) => {
        const u = new URLSearchParams({ meter: "calls", customer: other!, token: t! });
        return (await fetch(`/v1/usage/stream?${u.toString()}`)).status;
      },
      [token, acme],
    );
    expect(status).toBe(403);
    await page.close();
  });

  it("an invalid or missing token shows an error page, not data", async () => {
    const page = await browser.newPage();
    const res = await page.goto(`${base}/portal?token=tp1.bogus.token`);
    expect(res?.status()).toBe(401);
    expect(await page.locator("h1").textContent()).toBe("Link expired");
    expect((await page.goto(`${base}/portal`))?.status()).toBe(401);
    await page.close();
  });

  it("is readable on a phone: no horizontal scrolling at 375 px", async () => {
    const page = await browser.newPage({ viewport: { width: 375, height: 740 }, isMobile: true });
    await page.goto(`${base}/portal?token=${encodeURIComponent(await tokenFor(acme))}`);
    // A string so the test compiles without DOM typings; it runs in the page.
    const overflow = await page.evaluate<number>("document.documentElement.scrollWidth - window.innerWidth");
    expect(overflow).toBeLessThanOrEqual(0);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, "portal-phone.png"), fullPage: true });
    await page.close();
  });
});
