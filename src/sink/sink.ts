import type { JetStreamClient, JetStreamManager } from "nats";
import { busNames } from "../bus/index.js";
import { queryRows, sql, type ClickHouseClient } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { Semaphore } from "../lib/semaphore.js";
import type { Logger } from "../observability/index.js";
import { sinkMetrics } from "./metrics.js";
import { PartitionWorker } from "./partition-worker.js";

/** Options of {@link Sink}. */
export interface SinkOptions {
  config: Config;
  js: JetStreamClient;
  jsm: JetStreamManager;
  clickhouse: ClickHouseClient;
  log: Logger;
  /** Partitions this process owns. @default all partitions */
  partitions?: number[];
}

/**
 * JetStream → ClickHouse. One {@link PartitionWorker} per owned partition; inserts across
 * partitions share a cap (`TALLY_SINK_MAX_INFLIGHT`).
 *
 * Partition ownership must be exclusive (one sink process per partition at a time): the
 * ledger check is race-free only because one worker handles all of a partition's ids.
 */
export class Sink {
  private readonly workers: PartitionWorker[];
  private runs: Promise<void>[] = [];
  private lagTimer: NodeJS.Timeout | null = null;
  private retentionTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: SinkOptions) {
    const { config, js, clickhouse, log } = opts;
    const names = busNames(config.nats.prefix);
    const inflight = new Semaphore(config.sink.maxInflight);
    const owned = opts.partitions ?? Array.from({ length: config.nats.partitions }, (_, p) => p);
    this.workers = owned.map(
      (p) => new PartitionWorker(p, js, clickhouse, names, config, inflight, log.child({ partition: p })),
    );
  }

  start(): void {
    this.runs = this.workers.map((w) =>
      w.run().catch((err: unknown) => {
        this.opts.log.fatal({ err, partition: w.partition }, "partition worker failed");
        throw err;
      }),
    );
    this.lagTimer = setInterval(() => void this.updateLag(), 5000);
    this.retentionTimer = setInterval(() => void this.enforceLedgerRetention(), 3600_000);
    void this.enforceLedgerRetention();
  }

  /** Resolves when every worker ended (after {@link stop}) or rejects when one failed. */
  async done(): Promise<void> {
    await Promise.all(this.runs);
  }

  /** Drain: stop pulling, flush and ack what is buffered, then resolve. */
  async stop(): Promise<void> {
    if (this.lagTimer) clearInterval(this.lagTimer);
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    for (const w of this.workers) w.stop();
    await Promise.allSettled(this.runs);
  }

  private async updateLag(): Promise<void> {
    const names = busNames(this.opts.config.nats.prefix);
    for (const w of this.workers) {
      try {
        const info = await this.opts.jsm.consumers.info(names.stream, names.consumer(w.partition));
        sinkMetrics.lag.set({ partition: String(w.partition) }, info.num_pending + info.num_ack_pending);
      } catch {
        // NATS briefly unreachable: keep the last value
      }
    }
  }

  /** Drops ledger partitions (first-seen days) older than the dedup retention. */
  private async enforceLedgerRetention(): Promise<void> {
    const { clickhouse: ch, config, log } = this.opts;
    const db = config.clickhouse.database;
    const cutoff = new Date(Date.now() - config.limits.dedupRetentionDays * 86_400_000)
      .toISOString()
      .slice(0, 10);
    try {
      const parts = await queryRows<{ partition: string }>(ch, sql.ledgerPartitions(db));
      for (const { partition } of parts) {
        const day = partition.replace(/^'|'$/g, "");
        if (/^\d{4}-\d{2}-\d{2}$/.test(day) && day < cutoff) {
          await ch.command({ query: sql.dropLedgerPartition(db, day) });
          log.info({ day }, "dropped expired dedup-ledger partition");
        }
      }
    } catch (err: unknown) {
      log.warn({ err }, "ledger retention check failed; will retry");
    }
  }
}

export type { ClickHouseClient };
