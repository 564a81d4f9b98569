import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type StreamConfig,
} from "nats";
import type { Config } from "../config/index.js";
import { busNames } from "./names.js";
import { checkPartitionCount } from "./partitions.js";

/**
 * Creates or updates the events stream, the dead-letter stream and the per-partition sink
 * consumers. Idempotent; run by `migrate`, `dev`, `edge` and `sink` at start.
 *
 * Retention is work-queue: a message stays until a sink acked it (after ClickHouse confirmed
 * the insert), however long that takes. When `max_bytes` is reached new publishes are refused
 * (`discard: new`) and the edge answers 503: nothing accepted is ever discarded to make room.
 *
 * First of all it checks the configured partition count against the recorded one
 * ({@link checkPartitionCount}), so a misconfigured process fails here, before it publishes,
 * consumes or creates consumers.
 */
export async function ensureStreams(
  jsm: JetStreamManager,
  cfg: Config,
  ackWaitMs = cfg.sink.ackWaitMs,
): Promise<void> {
  await checkPartitionCount(jsm, cfg);
  const n = busNames(cfg.nats.prefix);
  const events: Partial<StreamConfig> = {
    name: n.stream,
    subjects: [n.subjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: cfg.nats.streamMaxBytes,
    max_msg_size: 8 * 1024 * 1024,
    num_replicas: cfg.nats.replicas,
    duplicate_window: nanos(2 * 60 * 1000),
    allow_direct: true,
  };
  const dlq: Partial<StreamConfig> = {
    name: n.dlqStream,
    subjects: [n.dlqSubjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: Math.max(64 * 1024 * 1024, Math.floor(cfg.nats.streamMaxBytes / 10)),
    num_replicas: cfg.nats.replicas,
    allow_direct: true,
  };
  for (const sc of [events, dlq]) {
    try {
      await jsm.streams.info(sc.name!);
      await jsm.streams.update(sc.name!, sc);
    } catch (err: unknown) {
      if (!isNotFound(err)) throw err;
      await jsm.streams.add(sc);
    }
  }
  for (let p = 0; p < cfg.nats.partitions; p++) {
    const consumer = {
      durable_name: n.consumer(p),
      filter_subject: n.subject(p),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(ackWaitMs),
      max_ack_pending: 1000,
      max_deliver: -1,
    };
    try {
      await jsm.consumers.info(n.stream, consumer.durable_name);
      await jsm.consumers.update(n.stream, consumer.durable_name, {
        ack_wait: consumer.ack_wait,
        max_ack_pending: consumer.max_ack_pending,
      });
    } catch (err: unknown) {
      if (!isNotFound(err)) throw err;
      await jsm.consumers.add(n.stream, consumer);
    }
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { code?: string; api_error?: { err_code?: number } };
  return e.api_error?.err_code === 10059 || e.api_error?.err_code === 10014 || e.code === "404";
}
