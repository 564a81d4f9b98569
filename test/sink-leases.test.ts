import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { busNames, PartitionCountMismatch } from "../src/bus/index.js";
import type { Config } from "../src/config/index.js";
import { startEdge, type RunningEdge } from "../src/runtime/edge.js";
import {
  assertRewriteInvariant,
  childEnv,
  distinctCount,
  eventually,
  log,
  post,
  startTestEdge,
  testConfig,
  usageCount,
} from "./helpers.js";

// Item: partition ownership enforced by leases. Several sinks started with default flags share
// the partitions (each partition written by one sink at a time) and take over a killed sink's
// partitions; the usage API counts every event exactly once.

const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  for (const f of cleanups) await f();
});

/** `tally sink` as a real child process, default flags. */
function spawnSink(config: Config): ChildProcess {
  const child = spawn(process.execPath, ["dist/src/cli/main.js", "sink"], {
    env: childEnv(config),
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((r) => child.once("exit", (code, signal) => r(signal ?? code)));
}

/** Partition → pid of the sink holding its lease (holder ids are `<host>-<pid>-<random>`). */
async function leaseHolders(edge: RunningEdge, config: Config): Promise<Map<number, number>> {
  // Bind only: creating the bucket here would create it without the sinks' TTL.
  const bucket = await edge.nc
    .jetstream()
    .views.kv(busNames(config.nats.prefix).leasesBucket, { bindOnly: true })
    .then(
      (kv) => kv,
      () => null,
    );
  if (bucket === null) return new Map();
  const kv = bucket;
  const out = new Map<number, number>();
  for (let p = 0; p < config.nats.partitions; p++) {
    const e = await kv.get(`partitions.${p}`);
    if (e === null || e.operation !== "PUT") continue;
    const holder = e.json<{ holder: string }>().holder;
    out.set(p, Number(holder.split("-").at(-2)));
  }
  return out;
}

async function run(sinks: number): Promise<void> {
  const partitions = 6;
  const config = testConfig({
    TALLY_PARTITIONS: String(partitions),
    TALLY_SINK_ACK_WAIT_MS: "2000",
    TALLY_SINK_BATCH_ROWS: "1000",
    TALLY_SINK_LINGER_MS: "300",
    TALLY_SINK_LEASE_TTL_MS: "3000",
  });
  const db = config.clickhouse.database;
  const { edge, ch } = await startTestEdge(config);
  cleanups.push(async () => {
    await edge.stop();
    await ch.close();
  });
  const procs = Array.from({ length: sinks }, () => spawnSink(config));
  // Every partition leased, and by live sinks only.
  await eventually(async () => (await leaseHolders(edge, config)).size === partitions, 20_000, "all leased");

  const customer = `multi-${sinks}`;
  const total = 24_000;
  const perRequest = 400;
  const requests = total / perRequest;
  const base = Date.now() - 3_600_000;
  let victim: ChildProcess | null = null;
  let killedAt = 0;
  const send = async (r: number) => {
    const events = Array.from({ length: perRequest }, (_, i) => ({
      id: `m-${r}-${i}`,
      type: "t",
      customer,
      time: new Date(base + r * perRequest + i).toISOString(),
      properties: { q: "1" },
    }));
    // A client that timed out re-sends at once: a second copy of each id on the bus while the
    // first is still lingering in a sink's buffer (in another bus message).
    expect((await post(edge, events)).status).toBe(202);
    if (r % 2 === 0) expect((await post(edge, events)).status).toBe(202);
    return events;
  };
  const sent: Awaited<ReturnType<typeof send>>[] = [];
  let next = 0;
  const client = async () => {
    for (let r = next++; r < requests; r = next++) {
      const events = await send(r);
      sent[r] = events;
      // Client retries: an earlier request re-sent as it was (same ids, same stamped times).
      if (r % 3 === 0 && r > 0) {
        const again = sent[r - 1] ?? events;
        expect((await post(edge, again)).status).toBe(202);
      }
      if (r === Math.floor(requests / 2) && victim === null) {
        // Kill a sink midway, once it has written part of what was accepted.
        await eventually(async () => (await distinctCount(ch, db, `customer = '${customer}'`)) > total / 6);
        const holders = await leaseHolders(edge, config);
        const pid = [...holders.values()][0]!;
        victim = procs.find((p) => p.pid === pid)!;
        victim.kill("SIGKILL");
        expect(await exited(victim)).toBe("SIGKILL");
        killedAt = Date.now();
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, client));
  expect(victim).not.toBeNull();
  const deadPid = (victim as unknown as ChildProcess).pid;

  // The killed sink's partitions are taken over by the others within the lease TTL (+ one renewal round).
  await eventually(
    async () => {
      const h = await leaseHolders(edge, config);
      return h.size === partitions && ![...h.values()].includes(deadPid!);
    },
    20_000,
    "takeover",
  );
  const takeoverMs = Date.now() - killedAt;

  const jsm = await edge.nc.jetstreamManager();
  await eventually(
    async () => (await jsm.streams.info(busNames(config.nats.prefix).stream)).state.messages === 0,
    60_000,
    "stream drained",
  );
  await eventually(async () => (await distinctCount(ch, db, `customer = '${customer}'`)) >= total, 30_000);
  expect(await usageCount(ch, db, customer)).toBe(total);
  await assertRewriteInvariant(ch, db);
  expect((await jsm.streams.info(busNames(config.nats.prefix).dlqStream)).state.messages).toBe(0);
  process.stderr.write(`${sinks} sinks: takeover observed ${takeoverMs} ms after SIGKILL (TTL 3000 ms)\n`);
  for (const p of procs) if (p !== victim) p.kill("SIGTERM");
  for (const p of procs) if (p !== victim) expect(await exited(p)).toBe(0);
}

describe("several sinks with default flags", () => {
  it(
    "two sinks, one SIGKILLed under load with client retries: every event counted once",
    () => run(2),
    120_000,
  );
  it(
    "three sinks, one SIGKILLed under load with client retries: every event counted once",
    () => run(3),
    120_000,
  );
});

describe("the partition count is fixed", () => {
  it("a sink or edge configured with another TALLY_PARTITIONS refuses to start, naming the recorded value", async () => {
    const config = testConfig({ TALLY_PARTITIONS: "4" });
    const { edge, ch } = await startTestEdge(config);
    cleanups.push(async () => {
      await edge.stop();
      await ch.close();
    });
    const other = { ...config, nats: { ...config.nats, partitions: 8 } };
    const err = await startEdge(other, log, false).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PartitionCountMismatch);
    expect((err as Error).message).toMatch(/TALLY_PARTITIONS is 8 .* created with 4 partitions/);

    const child = spawn(process.execPath, ["dist/src/cli/main.js", "sink"], {
      env: { ...childEnv(config), TALLY_PARTITIONS: "8" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(child);
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    expect(await exited(child)).toBe(2);
    expect(stderr).toContain("TALLY_PARTITIONS is 8");
    expect(stderr).toContain("set TALLY_PARTITIONS=4");
  });
});
