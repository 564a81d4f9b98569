import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Invoice } from "../src/billing/index.js";
import { parseCatalogDocument } from "../src/catalog/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { childEnv, eventually, startTestEdge, startTestSink, testConfig } from "./helpers.js";
import { api, createEndpoint, Receiver, verify, webhookEnv } from "./webhooks-setup.js";

/*
 * The close role as a real process (`tally close`, built into dist/) finalizes an invoice and
 * delivers its invoice.finalized with its own dispatcher. It is SIGKILLed while the receiver
 * holds the first request open; after a restart the delivery arrives again with the same
 * webhook-id and verifies (at least once: nothing was acked before the outcome was recorded).
 */
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY;
let config: Config;
let edge: RunningEdge;
let ch: ClickHouseClient;
let sink: RunningSink;
let receiver: Receiver;
const children: ChildProcess[] = [];

beforeAll(async () => {
  config = testConfig(webhookEnv);
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
  const doc = `
plans:
  - { key: daily, currency: usd, interval: day, prices: [{ key: base, type: flat, unit_amount: 1500 }] }
customers:
  - { key: acme, currency: usd }
subscriptions:
  - { key: sub-acme, customer: acme, plan: daily, started_at: "${new Date(D - DAY).toISOString()}" }
`;
  await edge.catalog.applyDocument(parseCatalogDocument(doc, edge.catalog.lookup()));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await receiver?.stop();
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

/** `tally close` (the long-running role, or with `args`) as a real process. */
function startCloseProcess(args: string[] = [], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "close", ...args], {
    env: {
      ...childEnv(config),
      ...webhookEnv,
      // A long timeout: the attempt is still in flight when the process is killed. An ack wait
      // long enough that a loaded machine's event-loop stall does not hand the held task out
      // again before the kill (a second attempt then would be legal, but not this test's point).
      TALLY_WEBHOOK_TIMEOUT_MS: "20000",
      TALLY_WEBHOOK_ACK_WAIT_MS: "5000",
      TALLY_CLOSE_GRACE: "1s",
      TALLY_CLOSE_INTERVAL_MS: "1000",
      TALLY_CLOSE_LEASE_TTL_MS: "2000",
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  return child;
}

it("SIGKILL of the dispatcher mid-delivery: delivered after a restart, same webhook-id, verifies", async () => {
  // First request: held open (never answered); later ones: 200.
  receiver = await Receiver.start((n) => (n === 0 ? { status: 200, delayMs: 60_000 } : { status: 200 }));
  const ep = await createEndpoint(edge, receiver.url, ["invoice.finalized"]);
  const first = startCloseProcess();
  const exited = new Promise((r) => first.once("exit", (code, signal) => r(signal ?? code)));
  await receiver.waitFor(1, "the first attempt", 30_000);
  first.kill("SIGKILL");
  expect(await exited).toBe("SIGKILL");
  const held = receiver.requests[0]!;
  const id = String(held.headers["webhook-id"]);
  expect(id).toMatch(/^evt_invoice_finalized_inv_[0-9a-f]{24}$/);
  // Nothing recorded the attempt as done.
  const before = (await api(edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data;
  expect(before).toHaveLength(1);
  expect(before[0].status).toBe("pending");

  startCloseProcess();
  await receiver.waitFor(2, "the delivery after the restart", 30_000);
  const again = receiver.requests[1]!;
  expect(again.headers["webhook-id"]).toBe(id);
  expect(again.body).toBe(held.body);
  const payload = verify(ep.secret, again);
  expect(payload.type).toBe("invoice.finalized");
  expect(payload.data).toMatchObject({
    customer: "acme",
    subscription: "sub-acme",
    total: 1500,
    currency: "USD",
  });
  await eventually(async () => {
    const d = (await api(edge, "GET", `/v1/webhook-endpoints/${ep.id}/deliveries`)).body.data[0];
    return d?.status === "succeeded";
  }, 10_000);
  // Delivered, and not again once recorded (at least once: every request the same id and body).
  const settled = receiver.requests.length;
  await new Promise((r) => setTimeout(r, 1500));
  expect(receiver.requests).toHaveLength(settled);
  expect(receiver.requests.every((q) => q.headers["webhook-id"] === id && q.body === held.body)).toBe(true);
});

it("a close killed right after finalizing, before its events were in the outbox: invoice.finalized is raised by the next run", async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  const late = await Receiver.start();
  try {
    const ep = await createEndpoint(edge, late.url, ["invoice.finalized"]);
    const doc = `
plans:
  - { key: daily, currency: usd, interval: day, prices: [{ key: base, type: flat, unit_amount: 1500 }] }
customers:
  - { key: acme, currency: usd }
  - { key: beta, currency: usd }
subscriptions:
  - { key: sub-acme, customer: acme, plan: daily, started_at: "${new Date(D - DAY).toISOString()}" }
  - { key: sub-beta, customer: beta, plan: daily, started_at: "${new Date(D - DAY).toISOString()}" }
`;
    await edge.catalog.applyDocument(parseCatalogDocument(doc, edge.catalog.lookup()));
    await eventually(() => Promise.resolve(edge.catalog.subscriptions.get("sub-beta") !== undefined));
    const killed = startCloseProcess(["--once"], { TALLY_FAULT_CLOSE_CRASH_AFTER_FINALIZED: "1" });
    expect(await new Promise((r) => killed.once("exit", (code, signal) => r(signal ?? code)))).toBe(
      "SIGKILL",
    );
    const beta = (await edge.invoices.ids()).length;
    expect(beta).toBe(2);
    let inv: Invoice | null = null;
    for (const id of await edge.invoices.ids()) {
      const i = await edge.invoices.get(id);
      if (i?.customer === "beta") inv = i;
    }
    expect(inv?.status).toBe("finalized");
    await new Promise((r) => setTimeout(r, 1000));
    expect(late.requests).toHaveLength(0);

    startCloseProcess();
    await late.waitFor(1, "invoice.finalized raised again by the next run", 30_000);
    const got = late.requests[0]!;
    expect(got.headers["webhook-id"]).toBe(`evt_invoice_finalized_${inv!.id}`);
    expect(verify(ep.secret, got).data).toMatchObject({ id: inv!.id, customer: "beta", number: inv!.number });
  } finally {
    await late.stop();
  }
});
