import { spawn } from "node:child_process";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatNumber, invoiceId, InvoiceStore } from "../src/billing/invoice-store.js";
import type { Invoice } from "../src/billing/invoice.js";
import type { Config } from "../src/config/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { guid, testConfig } from "./helpers.js";

let config: Config;
let nc: NatsConnection;

beforeAll(async () => {
  config = testConfig();
  nc = await connectNats(config, "invoice-store-test");
});
afterAll(async () => {
  await nc?.close();
});

function draft(subscription: string, periodStart: string, total = 1000): Invoice {
  return {
    id: invoiceId(subscription, periodStart),
    status: "draft",
    number: null,
    issuer_prefix: "TALLY",
    customer: "acme",
    customer_version: 1,
    subscription,
    subscription_version: 1,
    plans: [{ key: "growth", version: 1 }],
    currency: "USD",
    currency_exponent: 2,
    period: { start: periodStart, end: "2026-12-01T00:00:00.000Z" },
    cutoff: "2026-12-01T01:00:00.000Z",
    lines: [],
    rating: {
      period: { start: periodStart, end: "2026-12-01T00:00:00.000Z" },
      subscription_start: periodStart,
      segments: [
        { plan: "growth", plan_version: 1, from: periodStart, to: "2026-12-01T00:00:00.000Z", usage: {} },
      ],
      seat_changes: [],
      discounts: [],
    },
    true_ups: [],
    subtotal: total,
    total,
    created_at: "2026-12-01T01:00:00.000Z",
    finalized_at: null,
  };
}

async function openStore(bucket: string): Promise<InvoiceStore> {
  return InvoiceStore.open(nc.jetstream(), bucket, 1);
}

/** Runs the finalize fixture in a child process that SIGKILLs itself after `crashAfter` finalizations. */
function finalizeInChild(bucket: string, prefix: string, crashAfter: number, ids: string[]) {
  const child = spawn(
    process.execPath,
    ["dist/test/fixtures/finalize-child.js", config.nats.url, bucket, prefix, String(crashAfter), ...ids],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  return new Promise<NodeJS.Signals | number | null>((r) =>
    child.once("exit", (code, sig) => r(sig ?? code)),
  );
}

/** Numbers of the given invoices, which must all be finalized. */
async function numbers(store: InvoiceStore, ids: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const id of ids) {
    const inv = await store.get(id);
    expect(inv?.status, id).toBe("finalized");
    out.push(Number(inv!.number!.split("-").at(-1)));
  }
  return out.sort((a, b) => a - b);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("invoice numbering", () => {
  it("ids are deterministic per subscription period; numbers are TALLY-000001 and up", () => {
    expect(invoiceId("s1", "2026-11-01T00:00:00.000Z")).toBe(invoiceId("s1", "2026-11-01T00:00:00.000Z"));
    expect(invoiceId("s1", "2026-11-01T00:00:00.000Z")).not.toBe(invoiceId("s1", "2026-12-01T00:00:00.000Z"));
    expect(formatNumber("TALLY", 42)).toBe("TALLY-000042");
    expect(formatNumber("INV-EU", 1234567)).toBe("INV-EU-1234567");
  });

  for (const crashAfter of [0, 17, 40]) {
    it(`SIGKILL after ${crashAfter} of 40 finalizations: the next finalization completes the batch, numbers stay gapless and unique`, async () => {
      const bucket = guid();
      const store = await openStore(bucket);
      const batch1 = range(1, 40).map((i) => draft(`sub-${i}`, "2026-11-01T00:00:00.000Z"));
      for (const d of batch1) await store.putDraft(d);
      const ids1 = batch1.map((d) => d.id);

      expect(await finalizeInChild(bucket, "TALLY", crashAfter, ids1)).toBe("SIGKILL");

      // Another process finalizes other drafts: it completes the crashed batch first.
      const batch2 = range(41, 50).map((i) => draft(`sub-${i}`, "2026-11-01T00:00:00.000Z"));
      for (const d of batch2) await store.putDraft(d);
      await store.finalize(
        batch2.map((d) => d.id),
        "TALLY",
      );

      expect(await numbers(store, ids1)).toEqual(range(1, 40));
      expect(
        await numbers(
          store,
          batch2.map((d) => d.id),
        ),
      ).toEqual(range(41, 50));
    });
  }

  it("concurrent finalizers over overlapping drafts: every draft numbered once, no gap", async () => {
    const bucket = guid();
    const [a, b, c] = await Promise.all([openStore(bucket), openStore(bucket), openStore(bucket)]);
    const drafts = range(1, 60).map((i) => draft(`c-${i}`, "2026-11-01T00:00:00.000Z"));
    for (const d of drafts) await a.putDraft(d);
    const ids = drafts.map((d) => d.id);
    await Promise.all([
      a.finalize(ids.slice(0, 40), "TALLY"),
      b.finalize(ids.slice(20, 60), "TALLY"),
      c.finalize(ids.slice(10, 50).reverse(), "TALLY"),
    ]);
    expect(await numbers(a, ids)).toEqual(range(1, 60));
  });

  it("a finalized invoice never changes: a re-run close's draft does not replace it; prefixes count separately", async () => {
    const store = await openStore(guid());
    const d = draft("s", "2026-11-01T00:00:00.000Z", 1000);
    await store.putDraft(d);
    const [fin] = await store.finalize([d.id], "TALLY");
    expect(fin).toMatchObject({ status: "finalized", number: "TALLY-000001", total: 1000 });
    expect(await store.putDraft({ ...d, total: 999 })).toEqual(fin);
    expect(await store.get(d.id)).toEqual(fin);
    // Finalizing again changes nothing and uses no number.
    await store.finalize([d.id], "TALLY");
    const e = draft("s", "2026-12-01T00:00:00.000Z");
    await store.putDraft(e);
    expect((await store.finalize([e.id], "EU"))[0]?.number).toBe("EU-000001");
    const f = draft("s", "2027-01-01T00:00:00.000Z");
    await store.putDraft(f);
    expect((await store.finalize([f.id], "TALLY"))[0]?.number).toBe("TALLY-000002");
  });
});
