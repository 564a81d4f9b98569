import type { JetStreamManager } from "nats";
import type { Config } from "../config/index.js";
import { busNames } from "./names.js";

/**
 * A process configured with another partition count than the one the bus was created with.
 * Continuing would hash ids onto other partitions than before, so two copies of one id could
 * reach two sinks and both be written.
 */
export class PartitionCountMismatch extends Error {
  override name = "PartitionCountMismatch";
  constructor(
    readonly configured: number,
    readonly recorded: number,
    where: string,
  ) {
    super(
      `TALLY_PARTITIONS is ${configured} but this bus was created with ${recorded} partitions (${where}); ` +
        `set TALLY_PARTITIONS=${recorded}. The partition count cannot change for the life of a stream: ` +
        `event ids are hashed onto partitions and dedup relies on every copy of an id reaching the same one.`,
    );
  }
}

const partitionsKey = "partitions";

/**
 * Records the partition count on first start (create-if-absent in the `<prefix>_bus` KV
 * bucket) and refuses, with {@link PartitionCountMismatch}, any process configured differently.
 * Called by {@link ensureStreams} before it creates per-partition consumers, so every role
 * (edge, sink, migrate, dev) checks before it publishes or consumes.
 *
 * A bus created before this record existed is recognised by its sink consumers
 * (`<prefix>-sink-p<N>`): their count is taken as the recorded value.
 */
export async function checkPartitionCount(jsm: JetStreamManager, cfg: Config): Promise<void> {
  const names = busNames(cfg.nats.prefix);
  const kv = await jsm.jetstream().views.kv(names.busBucket, { history: 1, replicas: cfg.nats.replicas });
  const where = `recorded in NATS KV bucket ${names.busBucket}, key ${partitionsKey}`;
  const existing = await kv.get(partitionsKey);
  if (existing !== null && existing.operation === "PUT") {
    const recorded = Number(existing.string());
    if (recorded !== cfg.nats.partitions)
      throw new PartitionCountMismatch(cfg.nats.partitions, recorded, where);
    return;
  }
  const fromConsumers = await consumerPartitions(jsm, names.stream, names.consumer);
  if (fromConsumers !== null && fromConsumers !== cfg.nats.partitions) {
    throw new PartitionCountMismatch(
      cfg.nats.partitions,
      fromConsumers,
      `stream ${names.stream} has sink consumers for ${fromConsumers} partitions`,
    );
  }
  try {
    await kv.create(partitionsKey, String(cfg.nats.partitions));
  } catch (err: unknown) {
    // Another process recorded it first: check against what it wrote.
    const now = await kv.get(partitionsKey);
    if (now === null || now.operation !== "PUT") throw err;
    const recorded = Number(now.string());
    if (recorded !== cfg.nats.partitions)
      throw new PartitionCountMismatch(cfg.nats.partitions, recorded, where);
  }
}

/** The partition count implied by existing sink consumers, or null when there are none. */
async function consumerPartitions(
  jsm: JetStreamManager,
  stream: string,
  consumerName: (p: number) => string,
): Promise<number | null> {
  const prefix = consumerName(0).slice(0, -1);
  let max = -1;
  try {
    for await (const c of jsm.consumers.list(stream)) {
      if (!c.name.startsWith(prefix)) continue;
      const p = Number(c.name.slice(prefix.length));
      if (Number.isInteger(p) && p > max) max = p;
    }
  } catch (err: unknown) {
    const e = err as { api_error?: { err_code?: number }; code?: string };
    if (e.api_error?.err_code === 10059 || e.code === "404") return null; // no stream yet
    throw err;
  }
  return max < 0 ? null : max + 1;
}
