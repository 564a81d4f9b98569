import type { NatsConnection } from "nats";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  documentEntryId,
  JournalStore,
  loadRevenueInputs,
  postJournals,
  revenueReport,
  type PostDeps,
} from "../src/accounting/index.js";
import { InvoiceStore } from "../src/billing/index.js";
import { busNames } from "../src/bus/index.js";
import { CatalogStore, parseCatalogDocument } from "../src/catalog/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { draftInvoice } from "./fixtures/draft-invoice.js";
import { log, testConfig } from "./helpers.js";

/*
 * Deferred revenue and its recognition through the store and the poster on a real NATS. Tally's
 * close bills in arrears, so no invoice it makes today is finalized before its service ends (see
 * src/accounting/README.md): this document is stored directly, finalized on November 20 for
 * November 15 - January 15, as an in-advance invoice would be. The poster's clock is moved to
 * the last days of December and January.
 */
let nc: NatsConnection;
let deps: PostDeps;
let journal: JournalStore;
let catalog: CatalogStore;
const at = (ms: number) => () => ms;

beforeAll(async () => {
  const config = testConfig();
  nc = await connectNats(config, "accounting-recognition");
  const js = nc.jetstream();
  const names = busNames(config.nats.prefix);
  catalog = await CatalogStore.open(js, names.catalogBucket, 1, log);
  await catalog.start();
  await catalog.applyDocument(
    parseCatalogDocument(
      `accounts: { receivable: "1200", cash: "1000", deferred_revenue: "2400", discounts: "4900", revenue: "4000" }`,
      catalog.lookup(),
    ),
  );
  const invoices = await InvoiceStore.open(js, names.invoicesBucket, 1, log);
  const from = Date.UTC(2026, 10, 15);
  const to = Date.UTC(2027, 0, 15);
  const period = { start: new Date(from).toISOString(), end: new Date(to).toISOString() };
  const draft = draftInvoice(
    "inv_0000000000000000000000aa",
    "acme",
    "acme-pro",
    [
      {
        number: 1,
        kind: "flat",
        plan: "pro",
        price: "base",
        meter: null,
        description: "Pro, Nov 15 - Jan 15",
        period,
        quantity: "1",
        unit_amount_decimal: "6100",
        amount: 6100,
      },
    ],
    { period, currency: "USD" },
  );
  await invoices.putDraft(draft);
  await invoices.finalize([draft.id], "TALLY", new Date(Date.UTC(2026, 10, 20, 9)));
  journal = await JournalStore.open(js, names.journalBucket, 1, log);
  deps = {
    js,
    journal,
    invoices,
    catalog,
    snapshots: { snapshot: () => Promise.reject(new Error("no usage lines here")) },
    timezone: "UTC",
    log,
  };
});
afterAll(async () => {
  await catalog?.close();
  await nc?.drain();
});

const report = async (month: string) =>
  revenueReport(month, "UTC", catalog.chart()!, await loadRevenueInputs(journal, month)).data[0];

it("defers later months on the invoice entry and recognizes each on its last day, once", async () => {
  const first = await postJournals({ ...deps, now: at(Date.UTC(2026, 10, 25)) });
  expect(first.posted).toEqual({ invoice: 1, credit_note: 0, payment: 0, recognition: 0 });
  const doc = (await journal.get(documentEntryId({ id: "inv_0000000000000000000000aa", kind: "invoice" })))!;
  expect(doc.date).toBe("2026-11-20");
  // 61 days: 16 in November, 31 in December, 14 in January: 100 a day.
  expect(doc.lines.map((l) => [l.account, l.debit, l.credit, l.recognize_on ?? null])).toEqual([
    ["1200", 6100, 0, null],
    ["4000", 0, 1600, null],
    ["2400", 0, 3100, "2026-12-31"],
    ["2400", 0, 1400, "2027-01-31"],
  ]);
  // December 30: not yet.
  expect((await postJournals({ ...deps, now: at(Date.UTC(2026, 11, 30, 23)) })).posted.recognition).toBe(0);
  expect((await postJournals({ ...deps, now: at(Date.UTC(2026, 11, 31, 1)) })).posted.recognition).toBe(1);
  expect((await postJournals({ ...deps, now: at(Date.UTC(2026, 11, 31, 2)) })).posted.recognition).toBe(0);
  expect((await postJournals({ ...deps, now: at(Date.UTC(2027, 1, 3)) })).posted.recognition).toBe(1);
  const entries = await journal.forDocument("inv_0000000000000000000000aa");
  expect(entries.map((e) => [e.kind, e.date])).toEqual([
    ["invoice", "2026-11-20"],
    ["recognition", "2026-12-31"],
    ["recognition", "2027-01-31"],
  ]);
  expect(entries[1]!.lines.map((l) => [l.account, l.debit, l.credit])).toEqual([
    ["2400", 3100, 0],
    ["4000", 0, 3100],
  ]);

  expect(await report("2026-11")).toMatchObject({
    recognized: 1600,
    posted: 1600,
    billed: 6100,
    deferred_balance: 4500,
  });
  expect(await report("2026-12")).toMatchObject({
    recognized: 3100,
    posted: 3100,
    billed: 0,
    deferred_balance: 1400,
  });
  expect(await report("2027-01")).toMatchObject({
    recognized: 1400,
    posted: 1400,
    billed: 0,
    deferred_balance: 0,
  });
});
