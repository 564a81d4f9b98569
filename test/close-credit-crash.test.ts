import { spawn } from "node:child_process";
import { afterAll, beforeAll, expect, it } from "vitest";
import { busNames, Watermarks } from "../src/bus/index.js";
import { childEnv, eventually, log } from "./helpers.js";
import { DAY, HOUR, iso, startCloseEnv, today, type CloseEnv } from "./close-setup.js";

/*
 * A real `tally close` SIGKILLed after finalizing an invoice whose negative true-up went on a
 * credit note, before the credit note was finalized; a restart finalizes it, once. Daily plan
 * (100 flat + 10 per GB of a `latest` meter), P1 [D-2d, D-1d) billed at 50 GB, then a late
 * reading of 10 GB: P2 [D-1d, D) is 100, the credit note −400.
 */
const D = today();
const P1 = D - 2 * DAY;
const P2 = D - DAY;
let env: CloseEnv;

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
  - { key: beta, currency: usd, timezone: UTC }
subscriptions:
  - { key: beta-daily, customer: beta, plan: daily, started_at: "${iso(P1)}" }
`);
});
afterAll(async () => {
  await env?.stop();
});

function closeOnce(extra: Record<string, string>): Promise<number | string | null> {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "close", "--once", "--json"], {
    env: { ...childEnv(env.config), ...extra },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

const reading = (id: string, atMs: number, gb: string) => ({
  id,
  type: "storage",
  customer: "beta",
  time: iso(atMs),
  properties: { gb },
});

it("SIGKILL between an invoice and its credit note: the restart finalizes the credit note, once", async () => {
  await env.send([reading("b1", P1 + HOUR, "50")]);
  expect((await env.closeThrough(P2)).finalized).toHaveLength(1);
  await env.send([reading("b-late", P1 + 20 * HOUR, "10")]);
  await eventually(async () => (await env.usage("storage", "beta", P1, P2)) === "10", 30_000, "late reading");

  const graceS = Math.ceil((Date.now() + 3000 - D) / 1000);
  const cutoffMs = D + graceS * 1000;
  const watermarks = new Watermarks(
    await env.edge.nc.jetstreamManager(),
    busNames(env.config.nats.prefix),
    env.config.nats.partitions,
    0,
    log,
  );
  await eventually(async () => (await watermarks.current()) >= cutoffMs, 30_000, "watermark past the cutoff");
  const run = { TALLY_CLOSE_GRACE: `${graceS}s`, TALLY_CLOSE_LEASE_TTL_MS: "2000" };
  // Killed right after P2's invoice was finalized (its credit note is a stored draft).
  expect(await closeOnce({ ...run, TALLY_FAULT_CLOSE_CRASH_AFTER_FINALIZED: "1" })).toBe("SIGKILL");
  const killed = await env.documents("beta-daily");
  const p2 = killed.find((d) => d.kind === "invoice" && d.period.start === iso(P2))!;
  expect(p2).toMatchObject({ status: "finalized", total: 100 });
  expect(killed.find((d) => d.id === p2.credit_note)).toMatchObject({ kind: "credit_note", status: "draft" });

  expect(await closeOnce(run)).toBe(0);
  expect(await closeOnce(run)).toBe(0);
  const docs = await env.documents("beta-daily");
  expect(docs.map((d) => [d.kind ?? "invoice", d.status, d.number, d.total])).toEqual([
    ["invoice", "finalized", "TALLY-000001", 100 + 500],
    ["credit_note", "finalized", "TALLY-CN-000001", -400],
    ["invoice", "finalized", "TALLY-000002", 100],
  ]);
  expect(docs[1]!.id).toBe(p2.credit_note);
  // The invoice was not touched by the restart.
  expect(docs[2]).toEqual(p2);
});
