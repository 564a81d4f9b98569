import { promisify } from "node:util";
import { gzip as gzipCb } from "node:zlib";
import { Pool } from "undici";
import type { TallyError } from "./errors.js";
import {
  TallyBufferFullError,
  TallyClosedError,
  TallyRejectedError,
  TallyRetriesExhaustedError,
  type ServerErrorBody,
} from "./errors.js";
import {
  batchedSize,
  decodeEvents,
  encodeBatch,
  encodeEvent,
  type EncodedEvent,
  type TallyEvent,
} from "./event.js";
import {
  backoffMs,
  defaultRetry,
  isRetryableStatus,
  parseRetryAfter,
  type RetryOptions,
  type RetryPolicy,
} from "./retry.js";

const gzip = promisify(gzipCb);

/**
 * Where the SDK logs (pino-compatible: `(fields, message)`). The SDK never writes to the console.
 *
 * @example
 * ```ts
 * import pino from "pino";
 * const tally = new Tally({ url, apiKey, logger: pino({ name: "tally-sdk" }) });
 * ```
 */
export interface TallyLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

/**
 * Options of {@link Tally}.
 *
 * @example
 * ```ts
 * const options: TallyOptions = {
 *   url: "https://tally.internal",
 *   apiKey: process.env.TALLY_API_KEY!,
 *   source: "billing-api",
 *   onError: (err) => log.error({ err }, "usage events not accepted"),
 * };
 * ```
 */
export interface TallyOptions {
  /** Base URL of the Tally edge, e.g. `https://tally.example.com` (the SDK posts to `<url>/v1/events`). */
  url: string;
  /** An API key with the `ingest` scope. */
  apiKey: string;
  /**
   * `source` of events that do not set one.
   * @default none
   */
  source?: string;
  /**
   * Most events per request (the edge accepts at most 10,000 by default).
   * @default 1000
   */
  maxBatchSize?: number;
  /**
   * Most bytes per request before compression (the edge refuses bodies over 5 MiB by default).
   * @default 4194304 (4 MiB)
   */
  maxBatchBytes?: number;
  /**
   * Longest time an event waits for its batch to fill before it is sent anyway.
   * @default 200
   */
  flushIntervalMs?: number;
  /**
   * Most events held in memory: tracked and not yet acknowledged by the server (queued, being
   * sent, or waiting to be retried). When reached, `track()` throws {@link TallyBufferFullError}
   * and does not take the event (it is never dropped silently); `trackAsync()` waits for room.
   * @default 100000
   */
  maxBufferedEvents?: number;
  /**
   * Most requests in flight at once (also the number of keep-alive connections). A batch waiting
   * to be retried holds its slot, so a failing server slows the SDK down instead of being flooded.
   * @default 4
   */
  maxConcurrentRequests?: number;
  /**
   * Timeout for the response headers, and for each gap while the response body arrives
   * (undici `headersTimeout` and `bodyTimeout`). A timeout is retried.
   * @default 30000
   */
  requestTimeoutMs?: number;
  /**
   * Timeout for opening a connection.
   * @default 10000
   */
  connectTimeoutMs?: number;
  /**
   * gzip level of request bodies (1 fastest … 9 smallest). Event batches compress well even at 1.
   * @default 1
   */
  gzipLevel?: number;
  /**
   * Retry policy for network errors, timeouts, 408, 429 and 5xx.
   * @default { maxAttempts: 15, initialDelayMs: 100, maxDelayMs: 30000, maxRetryAfterMs: 300000 }
   */
  retry?: RetryOptions;
  /**
   * Called once per batch that failed for good: {@link TallyRejectedError} (the server refused it:
   * 400, 401, 403, 413, …; never retried) or {@link TallyRetriesExhaustedError}. Both carry the
   * batch's `events`. Exceptions thrown here are logged and otherwise ignored.
   * @default logs the error through `logger.error`
   */
  onError?: (err: TallyError) => void;
  /**
   * Logger for retries (warn), permanent failures (error) and batches (debug).
   * @default a logger that discards everything
   */
  logger?: TallyLogger;
  /**
   * Clock used for default event times.
   * @default Date.now
   */
  now?: () => number;
}

/**
 * Counters of a {@link Tally} client, e.g. for metrics.
 *
 * @example
 * ```ts
 * const { buffered, acknowledged, failed } = tally.stats();
 * ```
 */
export interface TallyStats {
  /** Events accepted by `track()` since the client was created. */
  tracked: number;
  /** Events in memory: tracked, not yet acknowledged or failed (bounded by `maxBufferedEvents`). */
  buffered: number;
  /** Requests being sent or waiting to be retried. */
  inFlightRequests: number;
  /** Events the server acknowledged (202: durable in the server's queue). */
  acknowledged: number;
  /** Events reported through `onError` (refused, or retries exhausted). */
  failed: number;
  /** Requests retried. */
  retries: number;
}

interface Queued extends EncodedEvent {
  seq: number;
}

interface Batch {
  firstSeq: number;
  events: Queued[];
}

const silent: TallyLogger = { debug() {}, warn() {}, error() {} };

/** Error bodies longer than this are not parsed (the server's are far smaller). */
const maxErrorBodyChars = 1 << 20;

function positiveInt(name: string, v: number | undefined, fallback: number): number {
  const n = v ?? fallback;
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`Tally: ${name} must be a positive integer`);
  return n;
}

/**
 * The Tally client: tracks usage events without blocking the caller, sends them in gzipped
 * protobuf batches, retries safely (every event has an id the server counts once), and keeps
 * memory bounded.
 *
 * Create one per process, and `await tally.close()` on shutdown. While events are buffered a
 * timer keeps the process alive until they are sent, so a short script does not lose events
 * even without `close()`.
 *
 * @example
 * ```ts
 * import { Tally } from "tally";
 *
 * const tally = new Tally({ url: "http://127.0.0.1:8787", apiKey: process.env.TALLY_API_KEY! });
 * tally.track({ type: "api_call", customer: "acme", properties: { tokens: 1200 } });
 * await tally.close(); // flushes, then releases connections
 * ```
 */
export class Tally {
  private readonly pool: Pool;
  private readonly path: string;
  private readonly headers: Record<string, string>;
  private readonly source: string | undefined;
  private readonly maxBatchSize: number;
  private readonly maxBatchBytes: number;
  private readonly flushIntervalMs: number;
  private readonly maxBuffered: number;
  private readonly maxConcurrent: number;
  private readonly requestTimeoutMs: number;
  private readonly gzipLevel: number;
  private readonly retry: RetryPolicy;
  private readonly onError: ((err: TallyError) => void) | undefined;
  private readonly log: TallyLogger;
  private readonly now: () => number;

  /** Events not yet in a batch, oldest first, from `head`. */
  private queue: Queued[] = [];
  private head = 0;
  private queuedBytes = 0;
  private seq = 0;
  /** Events with `seq <= sendThrough` are sent without waiting for a full batch (timer, flush). */
  private sendThrough = 0;
  private readonly inflight = new Set<Batch>();
  private lingerTimer: NodeJS.Timeout | null = null;
  private flushWaiters: { target: number; resolve: () => void }[] = [];
  private roomWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private closed = false;
  private closing: Promise<void> | null = null;
  private counters = { buffered: 0, acknowledged: 0, failed: 0, retries: 0 };

  constructor(options: TallyOptions) {
    const base = new URL(options.url.endsWith("/") ? options.url : `${options.url}/`);
    if (base.protocol !== "http:" && base.protocol !== "https:")
      throw new RangeError("Tally: url must be http: or https:");
    if (typeof options.apiKey !== "string" || options.apiKey.length === 0)
      throw new RangeError("Tally: apiKey is required");
    this.path = new URL("v1/events", base).pathname;
    this.headers = {
      authorization: `Bearer ${options.apiKey}`,
      "content-type": "application/x-protobuf",
      "content-encoding": "gzip",
      accept: "application/json",
    };
    this.source = options.source;
    this.maxBatchSize = positiveInt("maxBatchSize", options.maxBatchSize, 1000);
    this.maxBatchBytes = positiveInt("maxBatchBytes", options.maxBatchBytes, 4 * 1024 * 1024);
    this.flushIntervalMs = positiveInt("flushIntervalMs", options.flushIntervalMs, 200);
    this.maxBuffered = positiveInt("maxBufferedEvents", options.maxBufferedEvents, 100_000);
    this.maxConcurrent = positiveInt("maxConcurrentRequests", options.maxConcurrentRequests, 4);
    this.requestTimeoutMs = positiveInt("requestTimeoutMs", options.requestTimeoutMs, 30_000);
    this.gzipLevel = options.gzipLevel ?? 1;
    this.retry = { ...defaultRetry, ...options.retry };
    positiveInt("retry.maxAttempts", this.retry.maxAttempts, 1);
    this.onError = options.onError;
    this.log = options.logger ?? silent;
    this.now = options.now ?? Date.now;
    this.pool = new Pool(base.origin, {
      connections: this.maxConcurrent,
      pipelining: 1,
      connectTimeout: positiveInt("connectTimeoutMs", options.connectTimeoutMs, 10_000),
      headersTimeout: this.requestTimeoutMs,
      bodyTimeout: this.requestTimeoutMs,
    });
  }

  /**
   * Buffers one event and returns its id at once; never waits for the network. The event is
   * validated and encoded here, its `id` (UUIDv7 unless given) and `time` (now, unless given)
   * fixed here, so retries later resend exactly this event.
   *
   * @throws {TallyValidationError} the event can never be accepted; nothing was buffered.
   * @throws {TallyBufferFullError} `maxBufferedEvents` events are waiting; nothing was buffered.
   * @throws {TallyClosedError} after `close()`.
   *
   * @example
   * ```ts
   * const id = tally.track({ type: "api_call", customer: "acme", properties: { tokens: 1200, model: "small" } });
   * ```
   */
  track(event: TallyEvent): string {
    if (this.closed) throw new TallyClosedError();
    if (this.counters.buffered >= this.maxBuffered) throw new TallyBufferFullError(this.maxBuffered);
    const encoded = encodeEvent(event, this.now(), this.source);
    const queued: Queued = { id: encoded.id, bytes: encoded.bytes, seq: ++this.seq };
    this.queue.push(queued);
    this.queuedBytes += batchedSize(queued);
    this.counters.buffered++;
    if (this.queue.length - this.head >= this.maxBatchSize || this.queuedBytes >= this.maxBatchBytes)
      this.pump();
    else this.armTimer();
    return queued.id;
  }

  /**
   * Like `track()`, but when the buffer is full waits until there is room instead of throwing
   * ("block" overflow policy, for callers that can wait, e.g. batch jobs and importers).
   *
   * @example
   * ```ts
   * for (const row of rows) await tally.trackAsync({ id: row.id, type: "storage", customer: row.customer, properties: { gb: row.gb } });
   * ```
   */
  async trackAsync(event: TallyEvent): Promise<string> {
    while (!this.closed && this.counters.buffered >= this.maxBuffered) {
      await new Promise<void>((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
    }
    return this.track(event);
  }

  /**
   * Sends everything tracked so far without waiting for batches to fill, and resolves once each
   * of those events is acknowledged by the server or failed for good (reported to `onError`).
   * Never rejects.
   *
   * @example
   * ```ts
   * tally.track(event);
   * await tally.flush(); // event is durable in Tally (or onError was called)
   * ```
   */
  flush(): Promise<void> {
    const target = this.seq;
    if (target > this.sendThrough) this.sendThrough = target;
    this.pump();
    if (this.settledThrough(target)) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push({ target, resolve }));
  }

  /**
   * Stops accepting events, flushes (see `flush()`), then closes connections and timers.
   * Call it on shutdown (e.g. on SIGTERM). Idempotent.
   *
   * @example
   * ```ts
   * process.once("SIGTERM", () => void tally.close().then(() => process.exit(0)));
   * ```
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      for (const w of this.roomWaiters.splice(0)) w.reject(new TallyClosedError());
      await this.flush();
      if (this.lingerTimer !== null) clearTimeout(this.lingerTimer);
      this.lingerTimer = null;
      await this.pool.close();
    })();
    return this.closing;
  }

  /**
   * Current counters.
   *
   * @example
   * ```ts
   * setInterval(() => metrics.gauge("tally_sdk_buffered", tally.stats().buffered), 10_000);
   * ```
   */
  stats(): TallyStats {
    return {
      tracked: this.seq,
      buffered: this.counters.buffered,
      inFlightRequests: this.inflight.size,
      acknowledged: this.counters.acknowledged,
      failed: this.counters.failed,
      retries: this.counters.retries,
    };
  }

  private armTimer(): void {
    if (this.lingerTimer !== null) return;
    // NOTE: not unref'd on purpose: buffered events keep the process alive until sent.
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = null;
      if (this.seq > this.sendThrough) this.sendThrough = this.seq;
      this.pump();
    }, this.flushIntervalMs);
  }

  /** Starts batches while there is a free request slot and a full or due batch. */
  private pump(): void {
    while (this.inflight.size < this.maxConcurrent && this.head < this.queue.length) {
      const full =
        this.queue.length - this.head >= this.maxBatchSize || this.queuedBytes >= this.maxBatchBytes;
      if (!full && this.queue[this.head]!.seq > this.sendThrough) break;
      const events: Queued[] = [];
      let bytes = 0;
      while (this.head < this.queue.length && events.length < this.maxBatchSize) {
        const e = this.queue[this.head]!;
        const size = batchedSize(e);
        if (events.length > 0 && bytes + size > this.maxBatchBytes) break;
        events.push(e);
        bytes += size;
        this.head++;
      }
      this.queuedBytes -= bytes;
      const batch: Batch = { firstSeq: events[0]!.seq, events };
      this.inflight.add(batch);
      void this.send(batch);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.head < this.queue.length) this.armTimer();
    else if (this.lingerTimer !== null) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = null;
    }
  }

  /** Sends one batch until acknowledged or failed for good. Never rejects. */
  private async send(batch: Batch): Promise<void> {
    const n = batch.events.length;
    let failure: TallyError | null = null;
    try {
      const body = await gzip(encodeBatch(batch.events), { level: this.gzipLevel });
      for (let attempt = 1; ; attempt++) {
        let status: number | undefined;
        let retryAfterMs: number | undefined;
        let cause: unknown;
        try {
          const res = await this.pool.request({
            path: this.path,
            method: "POST",
            headers: this.headers,
            body,
            headersTimeout: this.requestTimeoutMs,
            bodyTimeout: this.requestTimeoutMs,
          });
          status = res.statusCode;
          if (status >= 200 && status < 300) {
            await res.body.dump();
            this.log.debug({ events: n, bytes: body.length, attempt }, "batch acknowledged");
            this.counters.acknowledged += n;
            return;
          }
          const text = await res.body.text();
          if (!isRetryableStatus(status)) {
            failure = new TallyRejectedError(status, parseErrorBody(text), decodeEvents(batch.events));
            return;
          }
          retryAfterMs = parseRetryAfter(res.headers["retry-after"], Date.now());
          cause = new Error(`HTTP ${status}: ${text.slice(0, 500)}`);
        } catch (err: unknown) {
          // Network error or timeout: whether the server stored the batch is unknown, and
          // resending is safe because the server counts each event id once.
          cause = err;
        }
        if (attempt >= this.retry.maxAttempts) {
          failure = new TallyRetriesExhaustedError(attempt, status, cause, decodeEvents(batch.events));
          return;
        }
        const delay =
          retryAfterMs !== undefined
            ? Math.min(retryAfterMs, this.retry.maxRetryAfterMs)
            : backoffMs(this.retry, attempt);
        this.counters.retries++;
        this.log.warn(
          { events: n, attempt, status, delayMs: delay, err: errorText(cause) },
          "sending usage events failed; retrying",
        );
        await new Promise((r) => setTimeout(r, delay));
      }
    } catch (err: unknown) {
      // Only a bug gets here (encoding or gzip failed): report it rather than lose the batch silently.
      failure = new TallyRetriesExhaustedError(0, undefined, err, decodeEvents(batch.events));
    } finally {
      this.settle(batch, failure);
    }
  }

  private settle(batch: Batch, failure: TallyError | null): void {
    this.inflight.delete(batch);
    this.counters.buffered -= batch.events.length;
    if (failure !== null) {
      this.counters.failed += batch.events.length;
      this.log.error(
        { code: failure.code, events: batch.events.length, err: failure.message },
        "usage events failed",
      );
      if (this.onError !== undefined) {
        try {
          this.onError(failure);
        } catch (err: unknown) {
          this.log.error({ err: errorText(err) }, "onError threw");
        }
      }
    }
    while (this.roomWaiters.length > 0 && this.counters.buffered < this.maxBuffered)
      this.roomWaiters.shift()!.resolve();
    this.pump();
    if (this.flushWaiters.length > 0) {
      const waiting = this.flushWaiters;
      this.flushWaiters = [];
      for (const w of waiting) {
        if (this.settledThrough(w.target)) w.resolve();
        else this.flushWaiters.push(w);
      }
    }
  }

  /** True when every event with `seq <= target` is acknowledged or failed. Batches are FIFO slices. */
  private settledThrough(target: number): boolean {
    if (this.head < this.queue.length && this.queue[this.head]!.seq <= target) return false;
    for (const b of this.inflight) if (b.firstSeq <= target) return false;
    return true;
  }
}

function parseErrorBody(text: string): ServerErrorBody | undefined {
  if (text.length === 0 || text.length > maxErrorBodyChars) return undefined;
  try {
    const body = JSON.parse(text) as { error?: Partial<ServerErrorBody> };
    const e = body.error;
    if (typeof e !== "object" || e === null || typeof e.code !== "string") return undefined;
    return {
      code: e.code,
      message: typeof e.message === "string" ? e.message : "",
      details: e.details,
      requestId: typeof e.requestId === "string" ? e.requestId : undefined,
    };
  } catch {
    return undefined;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
