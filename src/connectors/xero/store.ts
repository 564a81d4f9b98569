import type { JetStreamClient, KV } from "nats";
import pMap from "p-map";
import { readJson, updateJson, watchLoaded } from "../../lib/kv.js";
import type { Logger } from "../../observability/index.js";

/**
 * Where one journal entry's push to Xero stands (`entry.<id>`):
 * - `pending`: to be sent in a new batch (also after a batch was resolved without finding it);
 * - `batched`: a member of batch `batch` (open: sent or about to be; its outcome decides);
 * - `pushed`: Xero holds it as `manual_journal_id`; never sent again;
 * - `failed`: refused for good (Xero's validation, or not sendable: another currency); never
 *   retried automatically (an operator fixes the cause and calls `retryFailed`).
 */
export type EntryStatus = "pending" | "batched" | "pushed" | "failed";

export interface XeroEntryRecord {
  entry: string;
  document: string;
  status: EntryStatus;
  batch: string | null;
  manual_journal_id: string | null;
  /** Batches this entry was sent in. */
  batches: number;
  last_error: { code: string; message: string; at: string } | null;
  /** `journal.push_failed` emitted for the current failure (at-least-once: emitted, then recorded). */
  notified: boolean;
  /** Failures so far (the webhook event id includes it, so a re-failure after a reset is a new event). */
  failures: number;
  created_at: string;
  updated_at: string;
  pushed_at: string | null;
}

/** Xero's answer for one member of a batch, as recorded before it is applied to the entries. */
export interface BatchResult {
  entry: string;
  /** Set when Xero holds the journal. */
  manual_journal_id: string | null;
  /** Xero's validation messages when it refused the journal. */
  errors: string[] | null;
  /** Neither: the lookup did not find it; the entry goes back to `pending` (a new batch, a new key). */
  requeue?: boolean;
}

/**
 * One request's worth of journals (`batch.<id>`). Its membership and Idempotency-Key are fixed
 * once `sends` > 0; every send is recorded before it goes out and every answer before it is
 * applied, so a process killed at any point resumes the same batch: resend under the same key
 * (within the key's trusted lifetime) or look the journals up by narration marker.
 */
export interface XeroBatchRecord {
  id: string;
  /** The Idempotency-Key (≤ 128 chars). */
  key: string;
  entries: string[];
  /** `open`: not answered yet; `answered`: `results` recorded, being applied. Deleted once applied. */
  state: "open" | "answered";
  created_at: string;
  /** When the first request of this batch went out (keys are trusted relative to it). */
  first_sent_at: string | null;
  /** When the latest request of this batch went out (a lookup waits until it cannot still run). */
  last_sent_at?: string | null;
  sends: number;
  last_error: { code: string; message: string; at: string } | null;
  /** A retriable failure waits until then. */
  next_attempt_at: string | null;
  results: BatchResult[] | null;
  /** How `results` were obtained. */
  resolution: "response" | "lookup" | null;
}

/** The shared call budget (`limiter`): start times of recent calls, and per-minute counts for a day. */
export interface CallLog {
  /** Grant times (ms since the epoch) within the last minute window, oldest first. */
  recent: number[];
  /** Calls per epoch minute (`Math.floor(ms / 60000)`), for the day window. */
  day: Record<string, number>;
}

export class XeroStoreConflict extends Error {
  override name = "XeroStoreConflict";
}

/**
 * Push state in its own NATS KV bucket (`<prefix>_xero`): entry records, batch records and the
 * call log of the rate limiter. Every write is a compare-and-set on the revision read, so two
 * pushers never overwrite each other.
 */
export class XeroStore {
  private constructor(private readonly kv: KV) {}

  static async open(js: JetStreamClient, bucket: string, replicas: number): Promise<XeroStore> {
    return new XeroStore(await js.views.kv(bucket, { history: 5, replicas }));
  }

  async entry(id: string): Promise<XeroEntryRecord | null> {
    return (await this.read<XeroEntryRecord>(`entry.${id}`))?.value ?? null;
  }

  updateEntry(
    id: string,
    fn: (cur: XeroEntryRecord | null) => XeroEntryRecord | null,
  ): Promise<XeroEntryRecord | null> {
    return this.cas(`entry.${id}`, fn);
  }

  async batch(id: string): Promise<XeroBatchRecord | null> {
    return (await this.read<XeroBatchRecord>(`batch.${id}`))?.value ?? null;
  }

  updateBatch(
    id: string,
    fn: (cur: XeroBatchRecord | null) => XeroBatchRecord | null,
  ): Promise<XeroBatchRecord | null> {
    return this.cas(`batch.${id}`, fn);
  }

  /** Removes a batch once its results are applied to every member (entries keep its id). */
  async deleteBatch(id: string): Promise<void> {
    await this.kv.delete(`batch.${id}`);
  }

  /** Batches not yet applied (open or answered): what a restarted pusher resumes first. */
  async openBatches(): Promise<XeroBatchRecord[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys("batch.*")) keys.push(k);
    const read = await pMap(keys, (k) => this.read<XeroBatchRecord>(k), { concurrency: 16 });
    return read
      .flatMap((r) => (r === null ? [] : [r.value]))
      .sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  /**
   * Follows which entries are settled (`pushed` or `failed`: never sent again by a run), so the
   * close role can tell which posted entries still need a push without reading every record.
   */
  async followSettled(log?: Logger): Promise<{ settled: ReadonlySet<string>; stop: () => void }> {
    const settled = new Set<string>();
    const w = await watchLoaded(
      this.kv,
      { key: "entry.>" },
      (e) => {
        const id = e.key.slice("entry.".length);
        const status = e.operation === "PUT" ? e.json<XeroEntryRecord>().status : null;
        if (status === "pushed" || status === "failed") settled.add(id);
        else settled.delete(id);
      },
      "xero entries watch",
      { reset: () => settled.clear(), ...(log ? { log } : {}) },
    );
    return { settled, stop: w.stop };
  }

  /** Every entry record (listings, tests). */
  async entries(): Promise<XeroEntryRecord[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys("entry.*")) keys.push(k);
    const read = await pMap(keys, (k) => this.read<XeroEntryRecord>(k), { concurrency: 32 });
    return read.flatMap((r) => (r === null ? [] : [r.value]));
  }

  updateCallLog(fn: (cur: CallLog | null) => CallLog | null): Promise<CallLog | null> {
    return this.cas("limiter", fn);
  }

  private read<T>(key: string): Promise<{ value: T; revision: number } | null> {
    return readJson<T>(this.kv, key);
  }

  private cas<T>(key: string, fn: (cur: T | null) => T | null): Promise<T | null> {
    return updateJson(this.kv, key, fn, { maxAttempts: 51, conflict: (m) => new XeroStoreConflict(m) });
  }
}
