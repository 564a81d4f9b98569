import { performance } from "node:perf_hooks";
import type { JetStreamClient, JetStreamManager, KV } from "nats";
import type { BusNames } from "../bus/index.js";
import { holderId, isWrongLastSequence } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";

/**
 * Exclusive, expiring ownership of bus partitions, in a NATS KV bucket (`<prefix>_leases`).
 *
 * Why leases: the ledger check is race free only while one worker handles a partition's ids
 * (see README "Exactly once"). Two sinks on one partition could both find an id missing and
 * both write it, with no rewrite record, and the usage path would count it twice.
 *
 * How:
 * - `partitions.<p>` holds the lease of partition p. Taken with `kv.create` (fails if the key
 *   holds a value), renewed with `kv.update(key, value, revision)` (compare-and-set on the
 *   entry's revision), given back with a delete conditional on the revision.
 * - `sinks.<holder>` is each sink's heartbeat; the live ones are counted for the fair share.
 * - Expiry is the bucket's `max_age` (the TTL): the server removes an entry TTL after its last
 *   write, and then anyone may `create` it. So only the NATS server's clock decides when a lease
 *   is gone, and no host compares its clock with another host's.
 * - The holder measures with its own monotonic clock. A renewal that succeeded was written after
 *   the holder sent it, so the entry lives at least until `sent + TTL`: only the *rate* of the two
 *   clocks matters (NTP slews by < 0.05 %), never their offset. The holder stops writing to
 *   ClickHouse at `sent + TTL − TTL/4` ({@link Lease.mayWrite}): the last quarter of the TTL
 *   is left for a statement already sent to finish before anyone else can take the partition.
 *
 * Renewal runs every TTL/3, so one failed renewal is absorbed; two in a row stop the worker.
 */
export class PartitionLeases {
  /** Partition → the lease held on it. */
  private readonly held = new Map<number, Lease>();

  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly bucket: string,
    readonly ttlMs: number,
    readonly holder: string,
    private readonly log: Logger,
  ) {}

  /**
   * Opens (or creates, with `ttlMs` as its TTL) the lease bucket. An existing bucket keeps its
   * TTL: every sink times its leases by the bucket's value, whatever its own configuration says.
   */
  static async open(
    js: JetStreamClient,
    jsm: JetStreamManager,
    names: BusNames,
    ttlMs: number,
    replicas: number,
    log: Logger,
  ): Promise<PartitionLeases> {
    const kv = await js.views.kv(names.leasesBucket, { history: 1, replicas, ttl: ttlMs });
    const status = await kv.status();
    const bucketTtl = status.ttl;
    if (bucketTtl > 0 && bucketTtl !== ttlMs) {
      log.warn(
        { configured: ttlMs, bucket: bucketTtl },
        "TALLY_SINK_LEASE_TTL_MS differs from the lease bucket's TTL; using the bucket's",
      );
    }
    if (!(bucketTtl > 0))
      throw new Error(`KV bucket ${names.leasesBucket} has no TTL; delete it and restart`);
    const holder = holderId();
    return new PartitionLeases(
      kv,
      jsm,
      status.streamInfo.config.name,
      names.leasesBucket,
      bucketTtl,
      holder,
      log,
    );
  }

  /** The lease held on a partition, if any. */
  lease(partition: number): Lease | undefined {
    return this.held.get(partition);
  }

  heldPartitions(): number[] {
    return [...this.held.keys()];
  }

  /** Announces this sink as live (for the fair share of the others). */
  async heartbeat(): Promise<void> {
    await this.kv.put(`sinks.${this.holder}`, JSON.stringify({ at: new Date().toISOString() }));
  }

  /**
   * Sinks with a heartbeat younger than the TTL, this one included. Read from the stream's
   * per-subject counts (one snapshot), not by listing keys: `kv.keys()` walks a consumer and
   * missed keys being rewritten meanwhile (every heartbeat and lease is, every TTL/3).
   */
  async liveSinks(): Promise<number> {
    const prefix = `$KV.${this.bucket}.sinks.`;
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${prefix}>` });
    const live = Object.keys(info.state.subjects ?? {});
    return live.includes(`${prefix}${this.holder}`) ? live.length : live.length + 1;
  }

  /** Tries to take a free partition. False when another sink holds it (or NATS is unreachable). */
  async acquire(partition: number): Promise<Lease | null> {
    const sent = performance.now();
    try {
      const revision = await this.kv.create(leaseKey(partition), this.value());
      const lease = new Lease(partition, revision, sent, this.ttlMs);
      this.held.set(partition, lease);
      return lease;
    } catch (err: unknown) {
      if (!isWrongLastSequence(err)) this.log.warn({ err, partition }, "lease acquire failed");
      return null;
    }
  }

  /**
   * Extends a held lease. `lost`: the entry changed or expired (someone else may own it now):
   * stop at once. `failed`: NATS did not answer; the lease stands until its deadline.
   */
  async renew(lease: Lease): Promise<"renewed" | "lost" | "failed"> {
    const sent = performance.now();
    try {
      const revision = await this.kv.update(leaseKey(lease.partition), this.value(), lease.revision);
      lease.renewed(revision, sent);
      return "renewed";
    } catch (err: unknown) {
      if (isWrongLastSequence(err)) {
        lease.lose();
        this.forget(lease);
        return "lost";
      }
      this.log.warn({ err, partition: lease.partition }, "lease renewal failed; will retry");
      return "failed";
    }
  }

  /** Gives a lease back (after its worker stopped), so another sink can take it at once. */
  async release(lease: Lease): Promise<void> {
    lease.lose();
    this.forget(lease);
    try {
      await this.kv.delete(leaseKey(lease.partition), { previousSeq: lease.revision });
    } catch (err: unknown) {
      // Changed meanwhile, or NATS unreachable: the entry expires by itself within the TTL.
      this.log.warn({ err, partition: lease.partition }, "lease release failed; it will expire");
    }
  }

  /**
   * Stops announcing this sink. A stream purge of the subject, not a KV delete: a delete marker
   * would still be counted by {@link liveSinks} until it expired.
   */
  async leave(): Promise<void> {
    await this.jsm.streams
      .purge(this.stream, { filter: `$KV.${this.bucket}.sinks.${this.holder}` })
      .catch(() => undefined);
  }

  /** Drops a lease from the held set after it was lost by deadline (no NATS call). */
  forget(lease: Lease): void {
    if (this.held.get(lease.partition) === lease) this.held.delete(lease.partition);
  }

  private value(): string {
    return JSON.stringify({ holder: this.holder });
  }
}

/**
 * One held partition lease, timed by the holder's monotonic clock (see {@link PartitionLeases}).
 * The worker of the partition asks {@link mayWrite} before every ClickHouse statement.
 */
export class Lease {
  private lost = false;
  private safeUntil: number;

  constructor(
    readonly partition: number,
    public revision: number,
    sentAt: number,
    private readonly ttlMs: number,
  ) {
    this.safeUntil = this.deadline(sentAt);
  }

  /** True while a ClickHouse statement may still be sent under this lease. */
  mayWrite(): boolean {
    return !this.lost && performance.now() < this.safeUntil;
  }

  /** Milliseconds until {@link mayWrite} turns false without a renewal. */
  remainingMs(): number {
    return this.lost ? 0 : this.safeUntil - performance.now();
  }

  renewed(revision: number, sentAt: number): void {
    this.revision = revision;
    this.safeUntil = this.deadline(sentAt);
  }

  lose(): void {
    this.lost = true;
  }

  private deadline(sentAt: number): number {
    return sentAt + this.ttlMs - this.ttlMs / 4;
  }
}

function leaseKey(partition: number): string {
  return `partitions.${partition}`;
}
