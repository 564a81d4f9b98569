import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { headers, type JsMsg } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { tally } from "../src/gen/proto.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import {
  childEnv,
  eventually,
  get,
  guid,
  post,
  startTestEdge,
  startTestSink,
  testConfig,
} from "./helpers.js";

const run = promisify(execFile);
let config: Config;
let edge: RunningEdge;
let sink: RunningSink | null = null;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  await edge.catalog.apply([{ key: "dlq_calls", event_type: "t", aggregation: "count" }]);
  await eventually(() => Promise.resolve(edge.catalog.get("dlq_calls") !== undefined), 5000, "meter");
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const tallyCli = async (...args: string[]) =>
  (await run(process.execPath, ["dist/src/cli/main.js", ...args], { env: childEnv(config) })).stdout;
const cliJson = async (...args: string[]) => JSON.parse(await tallyCli(...args));

async function startSink(): Promise<void> {
  sink ??= await startTestSink(config);
}
async function stopSink(): Promise<void> {
  await sink?.stop();
  sink = null;
}

/** Usage of one customer through GET /v1/usage (the invoice path), with its watermark. */
async function usage(customer: string) {
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  const r = await get(edge, `/v1/usage?meter=dlq_calls&customer=${customer}&from=${from}&to=${to}`);
  expect(r.status).toBe(200);
  return {
    count: Number(r.body.data[0]?.value ?? 0),
    watermarkMs: Date.parse(r.body.watermark),
    pending: r.body.dead_letter_pending as number,
  };
}

/**
 * Ingests events through the edge (real 202s, real receive times), then dead-letters the bus
 * messages holding them exactly as the sink's deadLetter() does when a write fails for good:
 * copy to the DLQ with its headers, then ack on the events stream. Sink must be stopped.
 */
async function ingestAndDeadLetter(customer: string, n: number): Promise<number> {
  const events = Array.from({ length: n }, (_, i) => ({ id: `${customer}-${i}`, type: "t", customer }));
  expect((await post(edge, events)).status).toBe(202);
  const accepted = Date.now();
  const names = busNames(config.nats.prefix);
  const js = edge.nc.jetstream();
  for (let p = 0; p < config.nats.partitions; p++) {
    const consumer = await js.consumers.get(names.stream, names.consumer(p));
    const batch = await consumer.fetch({ max_messages: 100, expires: 1000 });
    const msgs: JsMsg[] = [];
    for await (const m of batch) msgs.push(m);
    for (const msg of msgs) {
      const h = headers();
      h.set("Tally-Reason", "permanent ClickHouse insert error");
      h.set("Tally-Original-Subject", msg.subject);
      h.set("Tally-Original-Seq", String(msg.seq));
      await js.publish(names.dlqSubject(p), msg.data, { headers: h });
      await msg.ackAck();
    }
  }
  return accepted;
}

describe("dead-letter stream", () => {
  it("moves a message the sink can never write to the DLQ, lists it, and replays fixed messages", async () => {
    await startSink();
    const names = busNames(config.nats.prefix);
    const js = edge.nc.jetstream();
    await js.publish(names.subject(0), new Uint8Array([0xff, 0xff, 0xff, 0x0f]));
    await eventually(async () => (await cliJson("dlq", "list")).total === 1, 20_000, "dead-lettered");
    const listed = await cliJson("dlq", "list");
    expect(listed.messages[0]).toMatchObject({
      originalSubject: names.subject(0),
      events: null,
      state: "pending",
    });
    expect(listed.messages[0].reason).toMatch(/^undecodable/);
    // Its events' receive times are unknown: no read can claim to be complete past anything.
    expect((await usage("dlq")).watermarkMs).toBe(0);

    // An operator puts a repaired message into the DLQ (as a replay source) and replays it.
    const now = Date.now();
    const good = tally.v1.BusBatch.encode({
      events: [{ id: "replayed-1", type: "t", customer: "dlq", timeMs: now, receivedMs: now }],
    }).finish();
    const h = headers();
    h.set("Tally-Original-Subject", names.subject(1));
    await js.publish(names.dlqSubject(1), good, { headers: h });
    const seq = (await cliJson("dlq", "list")).messages[1].seq as number;
    expect(await cliJson("dlq", "replay", "--seq", String(seq), "--by", "ops@test")).toMatchObject({
      replayed: 1,
      seqs: [seq],
    });
    await eventually(async () => (await usage("dlq")).count === 1, 20_000, "replayed counted");
    const after = await cliJson("dlq", "list");
    expect(after.total).toBe(1);
    expect(after.resolved).toEqual([
      expect.objectContaining({ seq, action: "replayed", by: "ops@test", events: 1 }),
    ]);

    // The garbage is discarded, on record; the watermark no longer waits for it.
    const bad = after.messages[0].seq as number;
    expect(
      await cliJson(
        "dlq",
        "discard",
        "--seq",
        String(bad),
        "--reason",
        "garbage from a test",
        "--by",
        "ops@test",
      ),
    ).toMatchObject({ discarded: 1, seqs: [bad], events: 0 });
    const done = await cliJson("dlq", "list");
    expect(done.total).toBe(0);
    expect(done.resolved).toContainEqual(
      expect.objectContaining({
        seq: bad,
        action: "discarded",
        by: "ops@test",
        reason: "garbage from a test",
        dead_letter_reason: expect.stringMatching(/^undecodable/),
        original_subject: names.subject(0),
      }),
    );
    await eventually(
      async () => (await usage("dlq")).watermarkMs > now,
      10_000,
      "watermark moves past a discarded dead letter",
    );
  });

  it("holds the watermark at dead-lettered events until they are replayed and written, or discarded", async () => {
    await stopSink();
    const lost = `lost-${guid()}`;
    const accepted = await ingestAndDeadLetter(lost, 30);
    // The events stream is empty and a sink is idle: only the dead letters hold the watermark.
    await startSink();
    const other = `other-${guid()}`;
    expect((await post(edge, [{ id: `${other}-1`, type: "t", customer: other }])).status).toBe(202);
    await eventually(async () => (await usage(other)).count === 1, 20_000, "other customer counted");
    let u = await usage(lost);
    expect(u.count).toBe(0);
    expect(u.pending).toBe(30);
    expect(u.watermarkMs).toBeLessThan(accepted);
    const counted = await get(edge, `/v1/events/count?customer=${lost}`);
    expect(counted.body).toMatchObject({ count: 0, dead_letter_pending: 30 });
    expect(Date.parse(counted.body.watermark)).toBeLessThan(accepted);
    const listed = await cliJson("dlq", "list");
    expect(listed.pending_events).toBe(30);

    // Replayed while no sink runs: the copies are in the events stream, not yet written, so the
    // dead letters keep holding the watermark (at their events' receive times, not the replay time).
    await stopSink();
    const replay = await cliJson("dlq", "replay");
    expect(replay.replayed).toBe(listed.total);
    u = await usage(lost);
    expect(u.pending).toBe(30);
    expect(u.watermarkMs).toBeLessThan(accepted);
    expect((await cliJson("dlq", "list")).messages.map((m: { state: string }) => m.state)).toEqual(
      Array(listed.total).fill("replaying"),
    );

    // Written: the watermark passes, and only together with the events.
    await startSink();
    await eventually(
      async () => {
        const v = await usage(lost);
        if (v.watermarkMs < accepted) return false;
        expect(v.count).toBe(30);
        expect(v.pending).toBe(0);
        return true;
      },
      20_000,
      "watermark passes replayed events once written",
    );
    const swept = await cliJson("dlq", "list");
    expect(swept).toMatchObject({ total: 0, pending_events: 0, removed: listed.total });

    // Discarded: recorded, never counted, and the watermark stops waiting.
    await stopSink();
    const gone = `gone-${guid()}`;
    const accepted2 = await ingestAndDeadLetter(gone, 5);
    await startSink();
    expect((await usage(gone)).watermarkMs).toBeLessThan(accepted2);
    const seqs = (await cliJson("dlq", "list")).messages.map((m: { seq: number }) => m.seq).join(",");
    const discard = await cliJson("dlq", "discard", "--seq", seqs, "--reason", "customer test data");
    expect(discard).toMatchObject({ events: 5, missing: [] });
    await eventually(async () => (await usage(gone)).watermarkMs > accepted2, 10_000, "watermark moves");
    const v = await usage(gone);
    expect(v).toMatchObject({ count: 0, pending: 0 });
    const log = (await cliJson("dlq", "list")).resolved.filter(
      (r: { action: string }) => r.action === "discarded",
    );
    expect(log.filter((r: { reason: string }) => r.reason === "customer test data")).toHaveLength(
      seqs.split(",").length,
    );
  });
});
