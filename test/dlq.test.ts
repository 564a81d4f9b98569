import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { headers } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import type { ClickHouseClient } from "../src/clickhouse/index.js";
import type { Config } from "../src/config/index.js";
import { tally } from "../src/gen/proto.js";
import type { RunningEdge } from "../src/runtime/edge.js";
import type { RunningSink } from "../src/runtime/sink.js";
import { childEnv, distinctCount, eventually, startTestEdge, startTestSink, testConfig } from "./helpers.js";

const run = promisify(execFile);
let config: Config;
let edge: RunningEdge;
let sink: RunningSink;
let ch: ClickHouseClient;

beforeAll(async () => {
  config = testConfig();
  ({ edge, ch } = await startTestEdge(config));
  sink = await startTestSink(config);
});
afterAll(async () => {
  await sink?.stop();
  await edge?.stop();
  await ch?.close();
});

const tallyCli = async (...args: string[]) =>
  (await run(process.execPath, ["dist/src/cli/main.js", ...args], { env: childEnv(config) })).stdout;

describe("dead-letter stream", () => {
  it("moves a message the sink can never write to the DLQ, lists it, and replays fixed messages", async () => {
    const names = busNames(config.nats.prefix);
    const js = edge.nc.jetstream();
    await js.publish(names.subject(0), new Uint8Array([0xff, 0xff, 0xff, 0x0f]));
    await eventually(
      async () => JSON.parse(await tallyCli("dlq", "list")).total === 1,
      20_000,
      "dead-lettered",
    );
    const listed = JSON.parse(await tallyCli("dlq", "list"));
    expect(listed.messages[0]).toMatchObject({ originalSubject: names.subject(0), events: null });
    expect(listed.messages[0].reason).toMatch(/^undecodable/);

    // An operator puts a repaired message into the DLQ (as a replay source) and replays everything.
    const good = tally.v1.BusBatch.encode({
      events: [{ id: "replayed-1", type: "t", customer: "dlq", timeMs: Date.now(), receivedMs: Date.now() }],
    }).finish();
    const h = headers();
    h.set("Tally-Original-Subject", names.subject(1));
    await js.publish(names.dlqSubject(1), good, { headers: h });
    const seq = JSON.parse(await tallyCli("dlq", "list")).messages[1].seq as number;
    expect(JSON.parse(await tallyCli("dlq", "replay", "--seq", String(seq)))).toEqual({ replayed: 1 });
    await eventually(
      async () => (await distinctCount(ch, config.clickhouse.database, "customer = 'dlq'")) === 1,
      20_000,
    );
    expect(JSON.parse(await tallyCli("dlq", "list")).total).toBe(1);
  });
});
