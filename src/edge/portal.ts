import { randomBytes } from "node:crypto";
import type { Context, Hono } from "hono";
import { DateTime } from "luxon";
import type { PortalGrant } from "../auth/index.js";
import { isDocumentId } from "../billing/index.js";
import type { Meter } from "../catalog/index.js";
import {
  isValidZone,
  monthContaining,
  queryUsage,
  type UsageDeps,
  type UsageResult,
  type Window,
} from "../usage/index.js";
import { ApiError } from "../lib/errors.js";
import type { EdgeDeps } from "./app.js";
import type { EdgeEnv } from "./context.js";
import { estimatesFor, invoicePage, renderEstimates, renderInvoices } from "./portal-billing.js";
import { esc, groupDigits } from "./portal-html.js";
import { serveLiveStream } from "./usage-routes.js";

/*
 * The customer usage page: `GET /portal?token=<portal token>[&tz=Europe/Berlin]`.
 *
 * Server-rendered HTML and SVG (no client framework, no charting bundle): one panel per meter
 * with the current calendar month's total and a per-day chart, both from the same query path as
 * the usage API. A small inline script follows one stream for the whole page (`/portal/stream`)
 * that carries each panel, re-rendered on the server when its numbers change — one renderer,
 * one connection whatever the number of meters (browsers allow six per origin).
 * The token is the only credential and pins the customer; nothing on the page takes a customer
 * from anywhere else.
 *
 * Customers with subscriptions also get "Estimated charges" (re-priced over the same stream,
 * `event: billing`, after usage changed, at most every billingRefreshMs) and "Past invoices",
 * each linking to `/portal/invoices/:id`; see portal-billing.ts.
 */

interface PanelData {
  meter: Meter;
  total: UsageResult;
  daily: UsageResult;
}

async function panelData(
  deps: UsageDeps,
  meter: Meter,
  customer: string,
  p: Window,
  tz: string,
): Promise<PanelData> {
  const base = { meter, customer, fromMs: p.fromMs, toMs: p.toMs, tz };
  const [total, daily] = await Promise.all([
    queryUsage(deps, base),
    queryUsage(deps, { ...base, window: "day" }),
  ]);
  return { meter, total, daily };
}

const aggregationLabel: Record<Meter["aggregation"], string> = {
  count: "total this month",
  sum: "total this month",
  min: "lowest this month",
  max: "highest this month",
  unique_count: "distinct this month",
  latest: "latest value",
  time_weighted_sum: "total this month",
  time_weighted_avg: "time-weighted average this month",
  peak: "peak this month",
};

/** A bar chart of the daily values, as inline SVG with an accessible name and a data table twin. */
function chart(p: PanelData, tz: string): string {
  const rows = p.daily.data;
  const values = rows.map((r) => (r.value === null ? 0 : Number(r.value))); // pixel heights only
  const max = Math.max(0, ...values);
  const w = 620;
  const h = 160;
  const pad = 20;
  const bw = (w - pad) / Math.max(rows.length, 1);
  const id = `chart-${p.meter.key}`;
  const bars = rows
    .map((r, i) => {
      const bh = max === 0 ? 0 : ((values[i] ?? 0) / max) * (h - pad - 4);
      const day = DateTime.fromISO(r.from, { zone: tz }).toFormat("d LLL");
      const label = `${day}: ${r.value === null ? "no data" : groupDigits(r.value)}`;
      const x = pad + i * bw;
      const tick =
        i % 5 === 0
          ? `<text x="${(x + bw / 2).toFixed(1)}" y="${h - 4}" font-size="10" text-anchor="middle" fill="#555">${esc(DateTime.fromISO(r.from, { zone: tz }).toFormat("d"))}</text>`
          : "";
      return `<rect x="${(x + 1).toFixed(1)}" y="${(h - pad - bh).toFixed(1)}" width="${Math.max(bw - 2, 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="#3b6fd8"><title>${esc(label)}</title></rect>${tick}`;
    })
    .join("");
  const table = rows
    .map(
      (r) =>
        `<tr><th scope="row">${esc(DateTime.fromISO(r.from, { zone: tz }).toFormat("d LLL"))}</th><td>${r.value === null ? "–" : esc(groupDigits(r.value))}</td></tr>`,
    )
    .join("");
  const name = p.meter.name ?? p.meter.key;
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-labelledby="${id}-t" preserveAspectRatio="none">
<title id="${id}-t">${esc(`${name} per day this month; highest day ${groupDigits(String(max))}`)}</title>
<line x1="${pad}" y1="${h - pad}" x2="${w}" y2="${h - pad}" stroke="#999" stroke-width="1"/>
<text x="${pad}" y="10" font-size="10" fill="#555" aria-hidden="true">max ${esc(groupDigits(String(max)))}</text>${bars}</svg>
<details><summary>Daily values</summary><table><thead><tr><th scope="col">Day</th><th scope="col">${esc(name)}</th></tr></thead><tbody>${table}</tbody></table></details>`;
}

function renderPanel(p: PanelData, tz: string): string {
  const name = p.meter.name ?? p.meter.key;
  const value = p.total.data[0]?.value ?? null;
  const unit = p.meter.unit === undefined ? "" : ` <span class="unit">${esc(p.meter.unit)}</span>`;
  return `<section class="panel" id="panel-${esc(p.meter.key)}" data-meter="${esc(p.meter.key)}" aria-labelledby="h-${esc(p.meter.key)}">
<h2 id="h-${esc(p.meter.key)}">${esc(name)}</h2>
<p class="total"><span class="value" data-value="${value === null ? "" : esc(value)}">${value === null ? "–" : esc(groupDigits(value))}</span>${unit}
<span class="label">${esc(aggregationLabel[p.meter.aggregation])}</span></p>
${chart(p, tz)}
<p class="wm">Up to date as of <time datetime="${esc(p.total.watermark)}">${esc(formatWatermark(p.total.watermark, tz))}</time></p>
</section>`;
}

function formatWatermark(iso: string, tz: string): string {
  return DateTime.fromISO(iso, { zone: tz }).toFormat("d LLL yyyy, HH:mm:ss ZZZZ");
}

function page(nonce: string, body: string, title: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>${esc(title)}</title>
<style nonce="${nonce}">
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;background:#f6f7f9}
body{margin:0;padding:1rem;max-width:52rem;margin-inline:auto}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
.panel{background:#fff;border-radius:.6rem;padding:1rem;margin-bottom:1rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.panel h2{font-size:1.05rem;margin:0 0 .3rem}
.total{margin:.2rem 0 .6rem}.total .value{font-size:2rem;font-weight:600;font-variant-numeric:tabular-nums}
.total .label,.unit{color:#555}.label{display:block;font-size:.85rem}
.chart{width:100%;height:10rem;display:block}
.wm{font-size:.8rem;color:#555;margin:.4rem 0 0}
details{font-size:.85rem;margin-top:.4rem}table{border-collapse:collapse}td,th{padding:.1rem .6rem;text-align:right}
#live{font-size:.8rem;color:#555}
.billing h3{font-size:1rem;margin:.9rem 0 .4rem}.billing .period{font-weight:400;color:#555}
.note,.shown{font-size:.85rem;color:#555;margin:.2rem 0 .6rem}
.scroll{overflow-x:auto}.lines,.invoice-list{width:100%;font-size:.9rem}
.lines caption{text-align:left;font-size:.85rem;color:#555;padding:.4rem 0 .2rem}
.lines th[scope=row],.invoice-list td,.invoice-list th{text-align:left;font-weight:400}.invoice-list thead th,.lines thead th{font-weight:600}
.lines thead th:first-child{text-align:left}.invoice-list th[scope=row]{white-space:nowrap}
.invoice-list td,.invoice-list th{padding:.15rem .3rem}
.lines .num,.invoice-list .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sub{display:block;font-size:.8rem;color:#555}
.est-total{font-size:1.15rem;font-weight:600;text-align:right;margin:.6rem 0 0}
.allowance p{margin:.5rem 0 .2rem;display:flex;flex-wrap:wrap;gap:.2rem .6rem;justify-content:space-between;font-size:.9rem}
.allowance progress{width:100%;height:.8rem}.allowance.over progress{accent-color:#b3261e}.over-by,.error{color:#b3261e}
nav{font-size:.9rem;margin-top:.5rem;display:flex;gap:1rem}
@media (max-width:30rem){.total .value{font-size:1.6rem}body{padding:.5rem}}
</style></head><body>${body}</body></html>`;
}

function tokenOf(c: Context<EdgeEnv>, deps: EdgeDeps): PortalGrant | null {
  const token = c.req.query("token");
  return token === undefined ? null : deps.portalTokens.verify(token);
}

function securityHeaders(c: Context<EdgeEnv>, nonce: string): void {
  c.header(
    "Content-Security-Policy",
    `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'`,
  );
  c.header("Referrer-Policy", "no-referrer");
  c.header("Cache-Control", "no-store");
  c.header("X-Content-Type-Options", "nosniff");
}

/**
 * Billing periods and invoice dates are shown in the customer's own time zone (the one their
 * periods are cut in), whatever `tz` the usage panels use; `tz` for customers not in the catalog.
 */
function billingZone(deps: EdgeDeps, customer: string, tz: string): string {
  return deps.catalog.customers.get(customer)?.timezone ?? tz;
}

/** Shortest time between two re-pricings of one page's estimate (each is a few usage queries). */
const billingRefreshMs = 5000;

/** The customer usage page and its panel fragments. */
export function mountPortal(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const now = deps.now ?? Date.now;
  /** `?tz=` when valid, else the customer's own zone from the catalog (its billing zone), else UTC. */
  const zoneOf = (c: Context<EdgeEnv>, customer: string) => {
    const tz = c.req.query("tz");
    if (tz !== undefined && isValidZone(tz)) return tz;
    return deps.catalog.customers.get(customer)?.timezone ?? "UTC";
  };

  app.get("/portal", async (c) => {
    const nonce = randomBytes(16).toString("base64");
    securityHeaders(c, nonce);
    const grant = tokenOf(c, deps);
    if (grant === null) {
      return c.html(
        page(
          nonce,
          `<main><h1>Link expired</h1><p>This usage link is invalid or has expired. Ask for a new one.</p></main>`,
          "Usage",
        ),
        401,
      );
    }
    const tz = zoneOf(c, grant.customer);
    const nowMs = now();
    const period = monthContaining(nowMs, tz);
    const meters = deps.catalog.list();
    const token = c.req.query("token")!;
    const billingTz = billingZone(deps, grant.customer, tz);
    const [panels, estimates] = await Promise.all([
      Promise.all(meters.map((m) => panelData(deps.usage, m, grant.customer, period, tz))),
      estimatesFor(deps, grant.customer, nowMs),
    ]);
    const invoices = invoicePage(
      deps.invoices.index,
      grant.customer,
      Number(c.req.query("invoices_page") ?? "1") || 1,
    );
    const month = DateTime.fromMillis(period.fromMs, { zone: tz }).toFormat("LLLL yyyy");
    const stream = `/portal/stream?${new URLSearchParams({ tz, token }).toString()}`;
    const pageLink = (n: number) => {
      const q = new URLSearchParams({ token });
      if (c.req.query("tz") !== undefined) q.set("tz", tz);
      q.set("invoices_page", String(n));
      return `/portal?${q.toString()}#invoices`;
    };
    const invoiceLink = (id: string) =>
      `/portal/invoices/${encodeURIComponent(id)}?${new URLSearchParams({ token }).toString()}`;
    const body = `<main>
<h1>Usage for ${esc(grant.customer)} · ${esc(month)}</h1>
<p id="live" role="status" aria-live="polite">Connecting to live updates…</p>
${renderEstimates(estimates, billingTz, nowMs)}
${panels.length === 0 ? "<p>No meters are set up yet.</p>" : panels.map((p) => renderPanel(p, tz)).join("\n")}
${estimates === null && invoices.total === 0 ? "" : renderInvoices(invoices, billingTz, invoiceLink, pageLink)}
</main>
<script nonce="${nonce}">
(() => {
  // One connection for every panel: browsers allow six per origin, and a page of more meters
  // than that, one stream each, would wait forever for the seventh.
  const live = document.getElementById("live");
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium", timeZone: ${JSON.stringify(tz)} });
  const panel = (meter) => document.querySelector('[data-meter="' + CSS.escape(meter) + '"]');
  const es = new EventSource(${JSON.stringify(stream).replace(/</g, "\\u003c")});
  es.addEventListener("open", () => { live.textContent = "Live: updates appear within seconds."; });
  es.addEventListener("error", () => { live.textContent = "Reconnecting to live updates…"; });
  es.addEventListener("panel", (e) => {
    const { meter, html } = JSON.parse(e.data);
    const el = panel(meter);
    if (el) el.outerHTML = html;
  });
  es.addEventListener("billing", (e) => {
    const el = document.getElementById("billing");
    if (el) el.outerHTML = JSON.parse(e.data).html;
  });
  es.addEventListener("watermark", (e) => {
    const { meter, watermark } = JSON.parse(e.data);
    const t = panel(meter)?.querySelector(".wm time");
    if (t) { t.setAttribute("datetime", watermark); t.textContent = fmt.format(new Date(watermark)); }
  });
})();
</script>`;
    return c.html(page(nonce, body, `Usage · ${grant.customer}`));
  });

  /**
   * The page's one live stream: every meter's panel, re-rendered on the server when its
   * numbers change (`event: panel`, `{ meter, html }`), and fresher watermarks while they do
   * not (`event: watermark`, `{ meter, watermark }`). One stream of the token's allowance,
   * however many meters; each meter's question is the daily series the page charts, polled
   * by the same shared pollers as `/v1/usage/stream`.
   */
  app.get("/portal/stream", (c) => {
    const grant = tokenOf(c, deps);
    if (grant === null) throw new ApiError("unauthorized", "invalid or expired portal token");
    c.set("portal", grant);
    const tz = zoneOf(c, grant.customer);
    const period = monthContaining(now(), tz);
    const meters = deps.catalog.list();
    const billed = deps.catalog.subscriptions.list().some((s) => s.customer === grant.customer);
    const billingTz = billingZone(deps, grant.customer, tz);
    return serveLiveStream(c, deps, (stream, end) => {
      // The estimate is priced again after usage changed (a panel re-rendered), at most once per
      // billingRefreshMs however many panels moved: its usage reads are the close's, per meter.
      let billingTimer: NodeJS.Timeout | undefined;
      let billingDirty = false;
      let billingBusy = false;
      let billingAt = 0;
      let stopped = false;
      const priceAgain = async () => {
        billingTimer = undefined;
        billingBusy = true;
        billingDirty = false;
        billingAt = Date.now();
        try {
          const nowMs = now();
          const html = renderEstimates(await estimatesFor(deps, grant.customer, nowMs), billingTz, nowMs);
          await stream.writeSSE({ event: "billing", data: JSON.stringify({ html }) });
        } catch (err: unknown) {
          deps.log.warn({ err }, "portal estimate update failed; next change retries");
        } finally {
          billingBusy = false;
          if (billingDirty) scheduleBilling();
        }
      };
      const scheduleBilling = () => {
        billingDirty = true;
        if (!billed || stopped || billingBusy || billingTimer !== undefined) return;
        billingTimer = setTimeout(
          () => void priceAgain(),
          Math.max(0, billingAt + billingRefreshMs - Date.now()),
        );
      };
      const unsubscribes = meters.map((meter) => {
        let firstRender = true;
        let lastData = "";
        let lastSentAt = 0;
        // Renders run one at a time per meter, always with the newest daily answer.
        let latest: UsageResult | null = null;
        let rendering = false;
        const render = async () => {
          rendering = true;
          try {
            while (latest !== null) {
              const daily = latest;
              latest = null;
              const total = await queryUsage(deps.usage, {
                meter,
                customer: grant.customer,
                fromMs: period.fromMs,
                toMs: period.toMs,
                tz,
              });
              const html = renderPanel({ meter, total, daily }, tz);
              await stream.writeSSE({ event: "panel", data: JSON.stringify({ meter: meter.key, html }) });
              // The first answer is what the page was rendered with; later ones are new usage.
              if (!firstRender) scheduleBilling();
              firstRender = false;
            }
          } catch (err: unknown) {
            deps.log.warn({ err, meter: meter.key }, "portal panel update failed; next change retries");
            lastData = "";
          } finally {
            rendering = false;
          }
        };
        return deps.usageStreams.subscribe(
          {
            meter,
            customer: grant.customer,
            fromMs: period.fromMs,
            toMs: period.toMs,
            window: "day",
            tz,
          },
          (u) => {
            if (u.kind === "closed") return end();
            if (u.kind === "error") return;
            const t = Date.now();
            if (u.dataJson !== lastData) {
              lastData = u.dataJson;
              lastSentAt = t;
              latest = u.result;
              if (!rendering) void render();
            } else if (t - lastSentAt >= 5000) {
              lastSentAt = t;
              void stream.writeSSE({
                event: "watermark",
                data: JSON.stringify({ meter: meter.key, watermark: u.result.watermark }),
              });
            }
          },
        );
      });
      return () => {
        stopped = true;
        clearTimeout(billingTimer);
        for (const unsubscribe of unsubscribes) unsubscribe();
      };
    });
  });

  /**
   * One of the token's customer's finalized invoices as JSON (the page links each past invoice
   * here). Anything else — another customer's invoice, a draft, an unknown id — is the same 404,
   * so a token cannot even learn that another customer's invoice exists.
   */
  app.get("/portal/invoices/:id", async (c) => {
    c.header("Cache-Control", "no-store");
    c.header("Referrer-Policy", "no-referrer");
    c.header("X-Content-Type-Options", "nosniff");
    const grant = tokenOf(c, deps);
    if (grant === null) throw new ApiError("unauthorized", "invalid or expired portal token");
    const id = c.req.param("id");
    const inv = isDocumentId(id) ? await deps.invoices.store.get(id) : null;
    if (inv === null || inv.customer !== grant.customer || inv.status !== "finalized")
      throw new ApiError("not_found", `no invoice ${JSON.stringify(id)}`);
    return c.json(inv);
  });

  app.get("/portal/panel", async (c) => {
    c.header("Cache-Control", "no-store");
    const grant = tokenOf(c, deps);
    if (grant === null) return c.text("invalid or expired portal token", 401);
    const meter = deps.catalog.get(c.req.query("meter") ?? "");
    if (meter === undefined) return c.text("no such meter", 404);
    const tz = zoneOf(c, grant.customer);
    const p = await panelData(deps.usage, meter, grant.customer, monthContaining(now(), tz), tz);
    return c.html(renderPanel(p, tz));
  });
}
