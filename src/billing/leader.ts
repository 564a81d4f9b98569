import { performance } from "node:perf_hooks";
import type { JetStreamClient, KV } from "nats";
import { holderId, isWrongLastSequence } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";

/**
 * The close role's leader lease: one key in a KV bucket whose TTL expires it, taken with
 * create-if-absent and renewed with compare-and-set, timed by the holder's monotonic clock (as
 * the sink's partition leases, src/sink/leases.ts). With several close processes, one does the
 * work and another takes over within the TTL if it dies.
 *
 * The lease saves work; it is not what keeps invoices right: every invoice change is a
 * compare-and-set and numbering is crash-safe (InvoiceStore), so two closes racing after a lease
 * expired still produce each invoice once.
 */
export class LeaderLease {
  private revision = 0;
  private validUntil = 0;
  readonly holder = holderId();

  private constructor(
    private readonly kv: KV,
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {}

  static async open(
    js: JetStreamClient,
    bucket: string,
    ttlMs: number,
    replicas: number,
    log: Logger,
  ): Promise<LeaderLease> {
    const kv = await js.views.kv(bucket, { history: 1, replicas, ttl: ttlMs });
    const ttl = (await kv.status()).ttl;
    return new LeaderLease(kv, ttl > 0 ? ttl : ttlMs, log);
  }

  /** True while this process holds the lease (with a quarter of the TTL to spare). */
  held(): boolean {
    return performance.now() < this.validUntil;
  }

  /** Takes the lease if free, or renews it if held. Returns whether it is held now. */
  async acquireOrRenew(): Promise<boolean> {
    const sent = performance.now();
    const value = JSON.stringify({ holder: this.holder, at: new Date().toISOString() });
    try {
      this.revision = this.held()
        ? await this.kv.update("leader", value, this.revision)
        : await this.kv.create("leader", value);
      this.validUntil = sent + this.ttlMs - this.ttlMs / 4;
      return true;
    } catch (err: unknown) {
      if (isWrongLastSequence(err))
        this.validUntil = 0; // someone else holds it
      else this.log.warn({ err }, "close leader lease: NATS error");
      return this.held();
    }
  }

  /** Gives the lease back so another close process can take it at once. */
  async release(): Promise<void> {
    if (!this.held()) return;
    this.validUntil = 0;
    await this.kv.delete("leader", { previousSeq: this.revision }).catch(() => undefined);
  }
}
