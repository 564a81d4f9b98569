import { afterEach, describe, expect, it } from "vitest";
import type { JournalEntry } from "../src/accounting/journal.js";
import { narrationMarker } from "../src/connectors/xero/index.js";
import { invoiceEntries } from "./fixtures/journal-entries.js";
import { runningChildren, startXeroEnv, type XeroEnv } from "./xero-push-setup.js";

/**
 * A real child process (dist/test/fixtures/xero-push-child.js, the pusher as `tally push xero`
 * runs it) is SIGKILLed at points of a batch; a second process then pushes the same entries.
 * Every entry must exist in Xero exactly once. Needs `npx tsc -p tsconfig.json` first.
 */
let env: XeroEnv | undefined;
afterEach(async () => {
  await env?.stop();
  env = undefined;
});

const PUT = "PUT /api.xro/2.0/ManualJournals";
/** Small budget so the two processes share a tight limiter (production default: 60 per 60 s). */
const LIMITS = { perMinute: 8, minuteWindowMs: 1000 };
const VARS = {
  TALLY_XERO_CALLS_PER_MINUTE: "8",
  TALLY_XERO_MINUTE_WINDOW_MS: "1000",
  TALLY_XERO_JOURNALS_PER_REQUEST: "4",
};

function expectExactlyOnce(e: XeroEnv, entries: readonly JournalEntry[]) {
  for (const entry of entries) {
    expect(e.srv.state.journalsWithNarration(narrationMarker(entry.id)), entry.id).toHaveLength(1);
  }
  expect(e.srv.state.allJournals()).toHaveLength(entries.length);
}

/** After the restart: both processes stayed within the call budget (the limiter is shared in KV). */
function expectWithinBudget(e: XeroEnv) {
  expect(e.srv.requests.api().filter((r) => r.fault === "rate_limit")).toHaveLength(0);
  expect(e.srv.requests.maxInWindow(LIMITS.minuteWindowMs)).toBeLessThanOrEqual(LIMITS.perMinute);
}

describe("xero push: SIGKILL and restart", () => {
  it("killed after the batch and its send were recorded, before the request left: the restart sends it under the same key; each journal once", async () => {
    env = await startXeroEnv("xero-crash-record", { limits: LIMITS }, VARS);
    const entries = invoiceEntries(10);
    const first = await env.child(entries, { TALLY_FAULT_XERO_CRASH_AT: "after_record" });
    expect(first.exit).toBe("SIGKILL");
    expect(env.srv.requests.of(PUT)).toHaveLength(0);
    // Up to TALLY_XERO_CONCURRENCY (2) batches were open, with their sends recorded but not made.
    const open = await env.store.openBatches();
    const sent = open.filter((b) => b.sends > 0);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    const second = await env.child(entries);
    expect(second.exit).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ pushed: 10, failed: [] });
    expectExactlyOnce(env, entries);
    const keys = env.srv.requests.of(PUT).map((r) => r.idempotencyKey);
    for (const b of sent) expect(keys).toContain(b.key);
    // Applied batches are deleted: nothing is left open.
    expect(await env.store.openBatches()).toHaveLength(0);
    expect(await env.store.openBatches()).toHaveLength(0);
    expectWithinBudget(env);
  });

  it("killed after Xero committed and answered, before the answer was recorded: the restart's resend is replayed by Xero; each journal once", async () => {
    env = await startXeroEnv("xero-crash-response", { limits: LIMITS }, VARS);
    const entries = invoiceEntries(10);
    const first = await env.child(entries, { TALLY_FAULT_XERO_CRASH_AT: "after_response" });
    expect(first.exit).toBe("SIGKILL");
    const committed = env.srv.requests.of(PUT).filter((r) => r.created > 0);
    expect(committed.length).toBeGreaterThanOrEqual(1);
    const second = await env.child(entries);
    expect(second.exit).toBe(0);
    expectExactlyOnce(env, entries);
    // The killed batch was resent under its key and Xero replayed its first answer.
    const replays = env.srv.requests.of(PUT).filter((r) => r.replayed);
    expect(replays.length).toBeGreaterThanOrEqual(1);
    expect(committed.map((r) => r.idempotencyKey)).toEqual(
      expect.arrayContaining(replays.map((r) => r.idempotencyKey)),
    );
    expectWithinBudget(env);
  });

  it("killed while the request was in flight and restarted at once, while Xero still executes it: resent under the same key until Xero answers; each journal once", async () => {
    env = await startXeroEnv(
      "xero-crash-inflight",
      { limits: LIMITS },
      { ...VARS, TALLY_XERO_CONCURRENCY: "1", TALLY_XERO_RETRY_MAX_MS: "1000" },
    );
    const entries = invoiceEntries(10);
    env.srv.faults.latency({ ms: 4000, count: 1, endpoint: PUT });
    const running = env.child(entries);
    for (let i = 0; i < 200 && env.srv.requests.of(PUT).length === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(env.srv.requests.of(PUT)).toHaveLength(1);
    for (const c of runningChildren()) c.kill("SIGKILL");
    expect((await running).exit).toBe("SIGKILL");
    // Restarted before Xero finished the killed request (it commits 4 s after it arrived).
    expect(env.srv.state.allJournals()).toHaveLength(0);
    // Runs until nothing is deferred: a run whose resends only met the running request (409)
    // leaves the batch for the next run instead of looking it up or creating it again.
    let deferred = 1;
    for (let run = 0; run < 4 && deferred > 0; run++) {
      const next = await env.child(entries);
      expect(next.exit).toBe(0);
      deferred = (JSON.parse(next.stdout) as { deferred: number }).deferred;
      if (deferred > 0) await new Promise((r) => setTimeout(r, 1100));
    }
    expect(deferred).toBe(0);
    expect(env.srv.requests.of(PUT)[0]!.created).toBe(4);
    expectExactlyOnce(env, entries);
    const puts = env.srv.requests.of(PUT);
    // The resends met the running request (409); the last one got its answer replayed.
    expect(puts.some((r) => r.status === 409)).toBe(true);
    expect(puts.filter((r) => r.replayed)).toHaveLength(1);
    expectWithinBudget(env);
  });

  it("killed after Xero committed, and Xero's idempotency keys expired before the restart: found by narration marker, not created again", async () => {
    env = await startXeroEnv(
      "xero-crash-expired",
      { limits: LIMITS, idempotencyTtlMs: 500 },
      {
        ...VARS,
        TALLY_XERO_IDEMPOTENCY_TRUST_MS: "300",
      },
    );
    const entries = invoiceEntries(10);
    const first = await env.child(entries, { TALLY_FAULT_XERO_CRASH_AT: "after_response" });
    expect(first.exit).toBe("SIGKILL");
    expect(env.srv.state.allJournals().length).toBeGreaterThanOrEqual(4);
    await new Promise((r) => setTimeout(r, 600));
    const second = await env.child(entries, { TALLY_XERO_TIMEOUT_MS: "250" });
    expect(second.exit).toBe(0);
    expectExactlyOnce(env, entries);
    expect(JSON.parse(second.stdout).lookups).toBeGreaterThanOrEqual(1);
    // Nothing was resent under an expired key (a resend would have created the journals again).
    const puts = env.srv.requests.of(PUT);
    expect(new Set(puts.map((r) => r.idempotencyKey)).size).toBe(puts.length);
    expectWithinBudget(env);
  });
});
