/**
 * End-to-end probes for the ingest bench, reading ClickHouse directly (the same table the
 * usage API counts from):
 *
 * - {@link CountSampler}: `count()` of the events table every `intervalMs`, giving events
 *   countable per second over time.
 * - {@link MarkerProbe}: sends one marker event (its own customer) every `intervalMs` through
 *   the edge while the load runs, and polls ClickHouse for the marker ids every `pollMs`. A
 *   marker's lag is (first poll answer that contains it) − (just before it was sent), so each
 *   lag is an upper bound with a resolution of one poll interval plus one query.
 */
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

/** Runs one query over ClickHouse's HTTP interface and returns the body (TabSeparated). */
export async function chQuery(url: string, query: string): Promise<string> {
  const res = await fetch(url, { method: "POST", body: query, signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`ClickHouse ${res.status}: ${text.slice(0, 500)}`);
  return text;
}

export interface CountSample {
  /** performance.now() when the answer arrived. */
  t: number;
  n: number;
}

export class CountSampler {
  readonly samples: CountSample[] = [];
  private running = false;
  private loop: Promise<void> = Promise.resolve();

  constructor(
    private readonly chUrl: string,
    private readonly table: string,
    private readonly intervalMs = 500,
  ) {}

  async count(): Promise<number> {
    return Number((await chQuery(this.chUrl, `SELECT count() FROM ${this.table}`)).trim());
  }

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const started = performance.now();
        try {
          const n = await this.count();
          this.samples.push({ t: performance.now(), n });
        } catch {
          // a slow answer under load: skip this sample
        }
        await sleep(Math.max(0, this.intervalMs - (performance.now() - started)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** The count at or just before time `t` (the latest sample not after it). */
  at(t: number): CountSample | undefined {
    let best: CountSample | undefined;
    for (const s of this.samples) if (s.t <= t) best = s;
    return best;
  }

  /** Highest rate over any window of at least `windowMs` between two samples. */
  peakRate(windowMs = 1000): number {
    let peak = 0;
    let j = 0;
    for (let i = 0; i < this.samples.length; i++) {
      const a = this.samples[i]!;
      while (j < this.samples.length && this.samples[j]!.t - a.t < windowMs) j++;
      if (j >= this.samples.length) break;
      const b = this.samples[j]!;
      peak = Math.max(peak, ((b.n - a.n) * 1000) / (b.t - a.t));
    }
    return peak;
  }
}

/** How a wait for countable events ended. */
export interface CatchUp {
  /** performance.now() when every expected event was countable; null when the wait gave up. */
  at: number | null;
  /** Gave up because the count did not move for `stallMs` (the pipeline is stuck). */
  stalled: boolean;
  countable: number;
}

/**
 * Polls until the table holds at least `expected` rows, or `timeoutMs` passed, or the count
 * did not move for `stallMs` (no need to wait out the timeout on a stuck pipeline).
 */
export async function waitCountable(
  sampler: CountSampler,
  expected: number,
  timeoutMs: number,
  onWait?: (countable: number) => void,
  stallMs = 20_000,
): Promise<CatchUp> {
  const deadline = performance.now() + timeoutMs;
  let nextReport = performance.now() + 5000;
  let n = -1;
  let movedAt = performance.now();
  while (performance.now() < deadline) {
    try {
      const now = await sampler.count();
      if (now >= expected) return { at: performance.now(), stalled: false, countable: now };
      if (now !== n) movedAt = performance.now();
      n = now;
    } catch {
      // retry
    }
    if (performance.now() - movedAt > stallMs) return { at: null, stalled: true, countable: n };
    if (performance.now() > nextReport) {
      nextReport += 5000;
      onWait?.(n);
    }
    await sleep(100);
  }
  return { at: null, stalled: false, countable: n };
}

export interface MarkerStats {
  sent: number;
  accepted: number;
  failed: number;
  found: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class MarkerProbe {
  private readonly sentAt = new Map<string, number>();
  private readonly lags: number[] = [];
  private seq = 0;
  private failed = 0;
  private sender: NodeJS.Timeout | null = null;
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly o: {
      edgeUrl: string;
      key: string;
      chUrl: string;
      table: string;
      /** The markers' customer; unique per probe so probes do not see each other's markers. */
      customer: string;
      idPrefix: string;
    },
  ) {}

  private deadline = Number.POSITIVE_INFINITY;
  private polling: Promise<void> = Promise.resolve();
  private readonly found = new Set<string>();

  /** Sends a marker every `intervalMs` and polls ClickHouse every `pollMs`. */
  start(intervalMs = 50, pollMs = 100): void {
    this.sender = setInterval(() => this.sendOne(), intervalMs);
    this.polling = this.poll(pollMs);
  }

  /** Stops sending and waits for the answers to markers in flight. */
  async stopSending(): Promise<void> {
    if (this.sender !== null) clearInterval(this.sender);
    this.sender = null;
    await Promise.all([...this.inflight]);
  }

  /** Stops sending; resolves once every accepted marker was countable, or after `timeoutMs`. */
  async finish(timeoutMs: number): Promise<void> {
    await this.stopSending();
    this.deadline = performance.now() + timeoutMs;
    await this.polling;
  }

  /** Stops waiting for markers that are not countable yet (the pipeline is stuck). */
  giveUp(): void {
    this.deadline = 0;
  }

  private sendOne(): void {
    const id = `${this.o.idPrefix}-${this.seq++}`;
    const body = JSON.stringify({
      id,
      type: "bench_marker",
      customer: this.o.customer,
      time: new Date().toISOString(),
    });
    const started = performance.now();
    const p = fetch(`${this.o.edgeUrl}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.o.key}`, "content-type": "application/json" },
      body,
      signal: AbortSignal.timeout(15_000),
    })
      .then(async (res) => {
        await res.arrayBuffer();
        if (res.status === 202) this.sentAt.set(id, started);
        else this.failed++;
      })
      .catch(() => {
        this.failed++;
      })
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  /** Accepted markers (each is one accepted event). */
  get accepted(): number {
    return this.sentAt.size;
  }

  private async poll(pollMs: number): Promise<void> {
    const query = `SELECT id FROM ${this.o.table} WHERE customer = '${this.o.customer}' FORMAT TabSeparated`;
    for (;;) {
      const settled = this.sender === null && this.inflight.size === 0;
      try {
        const text = await chQuery(this.o.chUrl, query);
        const now = performance.now();
        for (const id of text.split("\n")) {
          if (id === "" || this.found.has(id)) continue;
          const sent = this.sentAt.get(id);
          if (sent === undefined) continue; // its 202 has not arrived yet; seen on a later poll
          this.found.add(id);
          this.lags.push(now - sent);
        }
      } catch {
        // retry on the next tick
      }
      if (settled && this.found.size >= this.sentAt.size) return;
      if (performance.now() > this.deadline) return;
      await sleep(pollMs);
    }
  }

  stats(): MarkerStats {
    const sorted = [...this.lags].sort((a, b) => a - b);
    const q = (p: number) =>
      sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
    return {
      sent: this.seq,
      accepted: this.sentAt.size,
      failed: this.failed,
      found: sorted.length,
      p50Ms: Math.round(q(0.5)),
      p99Ms: Math.round(q(0.99)),
      maxMs: Math.round(sorted[sorted.length - 1] ?? NaN),
    };
  }
}
