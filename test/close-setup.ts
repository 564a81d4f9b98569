import { expect } from "vitest";
import {
  closeDue,
  InvoiceStore,
  usageSnapshotter,
  type CloseDeps,
  type Invoice,
} from "../src/billing/index.js";
import { busNames, Watermarks } from "../src/bus/index.js";
import { createClickHouse, type ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  eventually,
  get,
  log,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
  applyCatalog,
} from "./helpers.js";

/*
 * Shared setup of the close's semantic tests (time zones, ended subscriptions, credit notes, plan
 * changes, billing start): a real edge and sink on the suite's nats-server and clickhouse-server,
 * the catalog applied through POST /v1/catalog, and `closeDue` with the real snapshotter (reading
 * as the sink's user, like the close role).
 */

export const DAY = 86_400_000;
export const HOUR = 3_600_000;
export const iso = (ms: number) => new Date(ms).toISOString();
/** UTC midnight today. */
export const today = () => Math.floor(Date.now() / DAY) * DAY;

export interface CloseEnv {
  config: Config;
  edge: RunningEdge;
  deps: CloseDeps;
  /** Applies a catalog document through the admin API; resolves with status and body. */
  apply(doc: string): Promise<{ status: number; body: any }>;
  /** Posts events through the edge (202 expected). */
  send(events: unknown[]): Promise<void>;
  /**
   * Runs the close with a grace period that makes periods ending at or before `endMs` due, with
   * a cutoff a few seconds from now (so every event sent before is on time), once the watermark
   * passed it. A negative grace makes a period not over yet due (ended subscriptions' rounds).
   */
  closeThrough(endMs: number): Promise<Awaited<ReturnType<typeof closeDue>>>;
  /** Every stored document of a subscription (invoices and credit notes), by period start then id. */
  documents(subscription: string): Promise<Invoice[]>;
  /** A usage number through the usage API (the path invoices use). */
  usage(meter: string, customer: string, fromMs: number, toMs: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startCloseEnv(
  catalogDoc: string,
  overrides: Record<string, string> = {},
): Promise<CloseEnv> {
  const config = testConfig(overrides);
  const { edge, ch } = await startTestEdge(config);
  const sink: RunningSink = await startTestSink(config);
  const reader: ClickHouseClient = createClickHouse(config.clickhouse);
  const names = busNames(config.nats.prefix);
  const watermarks = new Watermarks(await edge.nc.jetstreamManager(), names, config.nats.partitions, 0, log);
  const deps: CloseDeps = {
    catalog: edge.catalog,
    invoices: await InvoiceStore.open(edge.nc.jetstream(), names.invoicesBucket, 1, log),
    snapshots: usageSnapshotter({ clickhouse: reader, database: config.clickhouse.database, watermarks }),
    watermark: () => watermarks.current(),
    log,
    settings: { graceMs: HOUR, issuerPrefix: "TALLY", backfillDays: 35 },
  };
  const apply = (doc: string) => applyCatalog(edge, doc);
  const applied = await apply(catalogDoc);
  expect(applied.status, JSON.stringify(applied.body)).toBe(200);
  return {
    config,
    edge,
    deps,
    apply,
    async send(events) {
      const r = await post(edge, events);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
    },
    async closeThrough(endMs) {
      const cutoffMs = Date.now() + 2000;
      deps.settings.graceMs = cutoffMs - endMs;
      await eventually(
        async () => (await watermarks.current()) >= cutoffMs,
        30_000,
        "watermark past the cutoff",
      );
      return closeDue(deps, Date.now());
    },
    async documents(subscription) {
      const out: Invoice[] = [];
      for (const id of await deps.invoices.ids()) {
        const inv = await deps.invoices.get(id);
        if (inv !== null && inv.subscription === subscription) out.push(inv);
      }
      return out.sort((a, b) =>
        a.period.start === b.period.start ? (a.id < b.id ? -1 : 1) : a.period.start < b.period.start ? -1 : 1,
      );
    },
    async usage(meter, customer, fromMs, toMs) {
      for (let attempt = 0; ; attempt++) {
        const r = await get(edge, `/v1/usage?meter=${meter}&customer=${customer}&from=${fromMs}&to=${toMs}`);
        if (r.status === 503 && attempt < 20) {
          await new Promise((done) => setTimeout(done, 250));
          continue;
        }
        expect(r.status).toBe(200);
        return (r.body.data[0]?.value as string | undefined) ?? "0";
      }
    },
    async stop() {
      await sink.stop();
      await edge.stop();
      await ch.close();
      await reader.close();
    },
  };
}

/** `n` api_call events of `customer` from `atMs`, one second apart, ids `<prefix>-<i>`. */
export function calls(prefix: string, customer: string, n: number, atMs: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${i}`,
    type: "api_call",
    customer,
    time: iso(atMs + i * 1000),
  }));
}

/** The service period an invoice bills: `[from, to)` (the part of its period it covers). */
export function service(inv: Invoice): [string, string] {
  return [inv.rating.subscription_start, inv.rating.subscription_end ?? inv.period.end];
}
