import type { JetStreamClient } from "nats";
import { Counter, Histogram } from "prom-client";
import { tally } from "../gen/proto.js";
import type { NormalizedEvent } from "../events/index.js";
import { ApiError } from "../lib/errors.js";
import { deferred, type Deferred } from "../lib/deferred.js";
import { fnv1a32 } from "../lib/hash.js";
import { registry } from "../observability/index.js";
import type { BusNames } from "./names.js";

const publishBytes = new Histogram({
  name: "tally_publish_batch_bytes",
  help: "Bytes per JetStream publish (one group commit)",
  buckets: [256, 1024, 8192, 65536, 262144, 1048576, 4194304],
  registers: [registry],
});
const publishRequests = new Histogram({
  name: "tally_publish_batch_requests",
  help: "Requests answered by one JetStream publish (group commit size)",
  buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  registers: [registry],
});
const publishSeconds = new Histogram({
  name: "tally_publish_seconds",
  help: "Latency of one JetStream publish until the server's ack",
  buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5],
  registers: [registry],
});
const publishFailures = new Counter({
  name: "tally_publish_failures_total",
  help: "JetStream publishes that failed (their requests got 503)",
  registers: [registry],
});
const backpressureWaits = new Counter({
  name: "tally_publish_backpressure_waits_total",
  help: "Requests that waited because the edge's publish queue was full",
  registers: [registry],
});

/** Options of {@link GroupCommitPublisher}. */
export interface PublisherOptions {
  partitions: number;
  /** Flush once this many bytes are queued for one partition. */
  maxBytes: number;
  /** JetStream publishes in flight per partition. */
  maxInflight: number;
  /** Per publish; on expiry the waiting requests fail with 503. */
  timeoutMs: number;
  /** Total queued bytes before new requests wait (backpressure). */
  maxPendingBytes: number;
}

interface Pending {
  chunks: Uint8Array[];
  bytes: number;
  waiters: Deferred<void>[];
}

/** Partition of an event id: `fnv1a32(id) % partitions`. */
export function partitionOf(id: string, partitions: number): number {
  return fnv1a32(id) % partitions;
}

/**
 * Group commit onto JetStream. Each request's events are encoded once (per partition) and
 * queued; a partition publishes as soon as it has a free in-flight slot, taking everything
 * queued so far as one message. Under load many requests share one publish; when idle a
 * request is published at once (no linger). Each request's promise resolves only when every
 * message holding its events was acknowledged by the JetStream server (invariant 1).
 *
 * Encoded BusBatch messages concatenate into one valid BusBatch (protobuf merges repeated
 * fields), so merging requests costs one Buffer.concat.
 */
export class GroupCommitPublisher {
  private readonly pending: Pending[];
  private readonly inflight: number[];
  private queuedBytes = 0;
  private scheduled = false;
  private spaceWaiters: (() => void)[] = [];
  private closed = false;
  /** Rejecters of the publishes awaiting their ack (see {@link abortInflight}). */
  private readonly inflightAborts = new Set<(err: Error) => void>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly names: BusNames,
    private readonly opts: PublisherOptions,
  ) {
    this.pending = Array.from({ length: opts.partitions }, () => ({ chunks: [], bytes: 0, waiters: [] }));
    this.inflight = Array.from({ length: opts.partitions }, () => 0);
  }

  /** Publishes events durably; resolves when JetStream acknowledged all of them. */
  async publish(events: readonly NormalizedEvent[]): Promise<void> {
    if (this.closed) throw new ApiError("unavailable", "edge is shutting down", undefined, 1);
    const byPartition = new Map<number, NormalizedEvent[]>();
    for (const e of events) {
      const p = partitionOf(e.id, this.opts.partitions);
      let list = byPartition.get(p);
      if (list === undefined) byPartition.set(p, (list = []));
      list.push(e);
    }
    const encoded: [number, Uint8Array][] = [];
    let total = 0;
    for (const [p, list] of byPartition) {
      for (const chunk of this.encode(list)) {
        encoded.push([p, chunk]);
        total += chunk.length;
      }
    }
    await this.waitForSpace(total);
    const acks: Promise<void>[] = [];
    for (const [p, chunk] of encoded) acks.push(this.enqueue(p, chunk));
    await Promise.all(acks);
  }

  /** Encodes events as BusBatch chunks no larger than maxBytes (splitting big requests). */
  private encode(list: NormalizedEvent[]): Uint8Array[] {
    const bytes = tally.v1.BusBatch.encode({ events: list }).finish();
    if (bytes.length <= this.opts.maxBytes || list.length === 1) return [bytes];
    const mid = list.length >> 1;
    return [...this.encode(list.slice(0, mid)), ...this.encode(list.slice(mid))];
  }

  private async waitForSpace(bytes: number): Promise<void> {
    if (this.queuedBytes + bytes <= this.opts.maxPendingBytes || this.queuedBytes === 0) return;
    backpressureWaits.inc();
    const deadline = Date.now() + this.opts.timeoutMs;
    while (this.queuedBytes + bytes > this.opts.maxPendingBytes && this.queuedBytes > 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new ApiError("unavailable", "ingest is saturated; retry later", undefined, 1);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.spaceWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private enqueue(p: number, chunk: Uint8Array): Promise<void> {
    const q = this.pending[p]!;
    const d = deferred();
    q.chunks.push(chunk);
    q.bytes += chunk.length;
    q.waiters.push(d);
    this.queuedBytes += chunk.length;
    this.schedule();
    return d.promise;
  }

  /**
   * Publishes at the end of this event-loop turn rather than at once: every request the HTTP
   * parser handed over in the same turn joins the same publish, and the publishes of all
   * partitions leave in one socket write. Costs well under a millisecond of latency; on a busy
   * edge it cut NATS writes (each a syscall that wakes nats-server) by several times.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      for (let p = 0; p < this.pending.length; p++) this.pump(p);
    });
  }

  private pump(p: number): void {
    const q = this.pending[p]!;
    while (this.inflight[p]! < this.opts.maxInflight && q.chunks.length > 0) {
      // Take whole chunks up to maxBytes (at least one).
      let n = 0;
      let bytes = 0;
      while (n < q.chunks.length && (n === 0 || bytes + q.chunks[n]!.length <= this.opts.maxBytes)) {
        bytes += q.chunks[n]!.length;
        n++;
      }
      const chunks = q.chunks.splice(0, n);
      const waiters = q.waiters.splice(0, n);
      q.bytes -= bytes;
      this.inflight[p]!++;
      void this.send(p, chunks, bytes, waiters);
    }
  }

  private async send(
    p: number,
    chunks: Uint8Array[],
    bytes: number,
    waiters: Deferred<void>[],
  ): Promise<void> {
    const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
    const end = publishSeconds.startTimer();
    let abort: (err: Error) => void = () => undefined;
    const aborted = new Promise<never>((_, reject) => (abort = reject));
    this.inflightAborts.add(abort);
    try {
      const ack = this.js.publish(this.names.subject(p), data, { timeout: this.opts.timeoutMs });
      // An aborted publish may still settle later: nobody waits for it any more.
      ack.catch(() => undefined);
      await Promise.race([ack, aborted]);
      end();
      publishBytes.observe(bytes);
      publishRequests.observe(waiters.length);
      for (const w of waiters) w.resolve();
    } catch (err: unknown) {
      publishFailures.inc();
      const apiErr = new ApiError(
        "unavailable",
        "event bus did not acknowledge the events; retry later",
        { cause: (err as Error).message },
        1,
      );
      for (const w of waiters) w.reject(apiErr);
    } finally {
      this.inflightAborts.delete(abort);
      this.inflight[p]!--;
      this.queuedBytes -= bytes;
      const ws = this.spaceWaiters;
      this.spaceWaiters = [];
      for (const w of ws) w();
      this.pump(p);
    }
  }

  /**
   * Fails every publish still awaiting its ack (their requests get 503), freeing their slots.
   * Called when the NATS connection drops: a publish written to the old socket never gets its
   * ack, and would hold its slot (and everything queued behind it) until `timeoutMs`, so a
   * restarted nats-server would see no traffic from this edge for that long. Its events may or
   * may not be stored; the client retries them and the sink's dedup by id absorbs the copy.
   * Returns how many publishes were failed.
   */
  abortInflight(reason: string): number {
    const aborts = [...this.inflightAborts];
    this.inflightAborts.clear();
    for (const a of aborts) a(new Error(reason));
    return aborts.length;
  }

  /** Stops taking new requests; resolves when everything queued was answered. */
  async drain(): Promise<void> {
    this.closed = true;
    while (this.queuedBytes > 0) await new Promise((r) => setTimeout(r, 10));
  }
}
