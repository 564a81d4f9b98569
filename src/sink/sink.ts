import type { JetStreamClient, JetStreamManager } from "nats";
import { busNames, type BusNames } from "../bus/index.js";
import { queryRows, sql, type ClickHouseClient } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { deferred } from "../lib/deferred.js";
import { Semaphore } from "../lib/semaphore.js";
import type { Logger } from "../observability/index.js";
import { sinkMetrics } from "./metrics.js";
import { InsertCoalescer } from "./insert-coalescer.js";
import { LedgerFilter } from "./ledger-filter.js";
import { PartitionLeases, type Lease } from "./leases.js";
import { PartitionWorker } from "./partition-worker.js";

/** Options of {@link Sink}. */
export interface SinkOptions {
  config: Config;
  js: JetStreamClient;
  jsm: JetStreamManager;
  clickhouse: ClickHouseClient;
  log: Logger;
  /** Partitions this process may lease (a restriction, never a claim). @default all partitions */
  partitions?: number[];
}

/**
 * JetStream → ClickHouse. Runs one {@link PartitionWorker} per partition it holds a lease on
 * (sink/leases.ts); inserts across partitions share a cap (`TALLY_SINK_MAX_INFLIGHT`).
 *
 * Every TTL/3 it renews its leases, announces itself, and moves toward its fair share,
 * `ceil(partitions / live sinks)`: it takes free partitions (those of a dead sink once their
 * lease expired) and gives back extras after draining their workers. A worker whose lease can
 * no longer be renewed in time is stopped before the lease can expire, without writing more.
 */
export class Sink {
  private readonly workers = new Map<number, { worker: PartitionWorker; run: Promise<void>; lease: Lease }>();
  private readonly allowed: number[];
  private readonly inflight: Semaphore;
  private readonly inserts: InsertCoalescer;
  private readonly names: BusNames;
  private leases: PartitionLeases | null = null;
  private lagTimer: NodeJS.Timeout | null = null;
  private retentionTimer: NodeJS.Timeout | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private ticking: Promise<void> = Promise.resolve();
  private stopping = false;
  private readonly ended = deferred<void>();

  constructor(private readonly opts: SinkOptions) {
    const { config } = opts;
    this.names = busNames(config.nats.prefix);
    this.inflight = new Semaphore(config.sink.maxInflight);
    // Waiting for a slow lookup of another partition costs the others at most a fifth of the
    // linger (100 ms with the defaults) before their rows go out without it.
    this.inserts = new InsertCoalescer(
      opts.clickhouse,
      config.clickhouse.database,
      Math.min(100, Math.ceil(config.sink.lingerMs / 5)),
      config.sink.crashAfterInsert,
    );
    this.allowed = opts.partitions ?? Array.from({ length: config.nats.partitions }, (_, p) => p);
    // A rejection nobody awaits yet must not crash the process: done() hands it out.
    this.ended.promise.catch(() => undefined);
  }

  /** Opens the lease bucket, takes a first share of partitions and starts their workers. */
  async start(): Promise<void> {
    const { config, js, jsm, log } = this.opts;
    this.leases = await PartitionLeases.open(
      js,
      jsm,
      this.names,
      config.sink.leaseTtlMs,
      config.nats.replicas,
      log,
    );
    log.info({ holder: this.leases.holder, leaseTtlMs: this.leases.ttlMs }, "sink leasing partitions");
    await this.tick();
    const every = Math.max(100, Math.floor(this.leases.ttlMs / 3));
    this.tickTimer = setInterval(() => {
      this.ticking = this.ticking.then(() => this.tick());
    }, every);
    this.watchdog = setInterval(
      () => this.enforceDeadlines(),
      Math.max(50, Math.floor(this.leases.ttlMs / 20)),
    );
    this.lagTimer = setInterval(() => void this.updateLag(), 5000);
    this.retentionTimer = setInterval(() => void this.enforceLedgerRetention(), 3600_000);
    void this.enforceLedgerRetention();
  }

  /** Partitions whose worker runs now. */
  ownedPartitions(): number[] {
    return [...this.workers.keys()].sort((a, b) => a - b);
  }

  /** Resolves when the sink stopped (after {@link stop}) or rejects when a worker failed. */
  done(): Promise<void> {
    return this.ended.promise;
  }

  /** Drain: stop pulling, flush and ack what is buffered, give the leases back, then resolve. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.lagTimer) clearInterval(this.lagTimer);
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    // Leases keep being renewed while the workers drain.
    await Promise.allSettled([...this.workers.values()].map((w) => this.release(w.worker.partition)));
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    await this.ticking;
    await this.leases?.leave();
    this.ended.resolve();
  }

  /** One round: heartbeat, renew, then move toward the fair share. Never throws. */
  private async tick(): Promise<void> {
    const leases = this.leases;
    if (leases === null) return;
    const log = this.opts.log;
    try {
      await leases.heartbeat();
    } catch (err: unknown) {
      log.warn({ err }, "sink heartbeat failed");
    }
    for (const p of leases.heldPartitions()) {
      const lease = leases.lease(p);
      if (lease === undefined) continue;
      if ((await leases.renew(lease)) === "lost") this.lost(p, "lost");
    }
    if (this.stopping) return;
    let live: number;
    try {
      live = await leases.liveSinks();
    } catch (err: unknown) {
      log.warn({ err }, "cannot count live sinks; keeping the current partitions");
      return;
    }
    const share = Math.min(this.allowed.length, Math.ceil(this.opts.config.nats.partitions / live));
    const owned = this.ownedPartitions();
    if (owned.length > share) {
      // Give back the extras (after draining them), so newly started sinks get their share.
      for (const p of owned.slice(share)) void this.release(p);
      return;
    }
    // Start at a per-holder offset so sinks starting together try different partitions first.
    const offset = parseInt(leases.holder.slice(-8), 16) % this.allowed.length;
    for (let i = 0; i < this.allowed.length && this.workers.size < share && !this.stopping; i++) {
      const p = this.allowed[(offset + i) % this.allowed.length]!;
      if (this.workers.has(p)) continue;
      const lease = await leases.acquire(p);
      if (lease !== null) this.startWorker(p, lease);
    }
    sinkMetrics.leases.set(this.workers.size);
  }

  private startWorker(p: number, lease: Lease): void {
    const { config, js, clickhouse, log } = this.opts;
    // Built now that the lease is held: this worker is the only writer of p's ids from here on
    // (see ledger-filter.ts); dropped with the worker.
    const filter = config.sink.bloom
      ? new LedgerFilter({
          ch: clickhouse,
          db: config.clickhouse.database,
          partition: p,
          log: log.child({ partition: p }),
          settleMs: this.leases?.ttlMs ?? config.sink.leaseTtlMs,
        }).start()
      : null;
    const worker = new PartitionWorker(
      p,
      js,
      clickhouse,
      this.names,
      config,
      this.inflight,
      log.child({ partition: p }),
      lease,
      this.inserts,
      filter,
    );
    const run = worker
      .run()
      .catch((err: unknown) => {
        log.fatal({ err, partition: p }, "partition worker failed");
        this.ended.reject(err);
      })
      .finally(() => filter?.stop());
    this.workers.set(p, { worker, run, lease });
    log.info({ partition: p }, "partition leased; worker started");
  }

  /** Drains a partition's worker, then gives its lease back. */
  private async release(p: number): Promise<void> {
    const w = this.workers.get(p);
    if (w === undefined) return;
    w.worker.stop();
    await w.run;
    if (this.workers.get(p) === w) this.workers.delete(p);
    // NOTE: after the tick in progress, so no renewal of this lease is in flight: the delete is
    // conditional on the lease's revision and would fail against a renewal racing it.
    const released = this.ticking.then(() => this.leases?.release(w.lease));
    this.ticking = released.then(() => undefined);
    await released;
    sinkMetrics.leases.set(this.workers.size);
    this.opts.log.info({ partition: p }, "partition released");
  }

  /** Stops, without writing more, every worker whose lease is no longer safe to write under. */
  private enforceDeadlines(): void {
    for (const [p, w] of this.workers) {
      if (!w.lease.mayWrite()) this.lost(p, "expired");
    }
  }

  private lost(p: number, reason: "expired" | "lost"): void {
    const w = this.workers.get(p);
    if (w === undefined) return;
    this.workers.delete(p);
    w.lease.lose();
    this.leases?.forget(w.lease);
    w.worker.abandon();
    w.worker.filter?.stop();
    sinkMetrics.leaseLosses.inc({ reason });
    sinkMetrics.leases.set(this.workers.size);
    this.opts.log.error(
      { partition: p, reason },
      "partition lease could not be renewed in time; worker stopped without writing more",
    );
  }

  private async updateLag(): Promise<void> {
    const names = busNames(this.opts.config.nats.prefix);
    for (const p of this.workers.keys()) {
      try {
        const info = await this.opts.jsm.consumers.info(names.stream, names.consumer(p));
        sinkMetrics.lag.set({ partition: String(p) }, info.num_pending + info.num_ack_pending);
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
