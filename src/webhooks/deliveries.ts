import type { JetStreamClient, KV } from "nats";
import pMap from "p-map";
import { isWrongLastSequence } from "../lib/kv.js";
import type { WebhookEventType } from "./emitter.js";
import { token } from "./endpoints.js";

/** One HTTP attempt of a delivery. */
export interface DeliveryAttempt {
  at: string;
  /** `schedule` (first attempt and retries) or `replay` (POST .../replay). */
  trigger: "schedule" | "replay";
  /** The response status, or null when there was none (timeout, connection error). */
  status_code: number | null;
  /** Why it failed (`timeout`, `connection: ...`, `status 500`), null on success. */
  error: string | null;
  duration_ms: number;
}

/**
 * One event for one endpoint, as kept in the delivery log (NATS KV `<prefix>_webhook_deliveries`,
 * key `d.<endpoint>.<delivery>`). `payload` holds the exact bytes every attempt sends, so the
 * body (and the `webhook-id`) is the same across retries and replays.
 */
export interface DeliveryRecord {
  id: string;
  endpoint: string;
  event_id: string;
  event_type: WebhookEventType;
  /**
   * `pending`: waiting for an attempt (see `next_attempt_at`); `succeeded`: a 2xx came back;
   * `failed`: every scheduled attempt failed (replay still possible); `skipped`: the endpoint was
   * disabled or deleted before it succeeded.
   */
  status: "pending" | "succeeded" | "failed" | "skipped";
  /** Scheduled attempts made (replays not counted): the position in the retry schedule. */
  scheduled_attempts: number;
  /** Newest last; the last 50 are kept. */
  attempts: DeliveryAttempt[];
  next_attempt_at: string | null;
  payload: string;
  created_at: string;
  updated_at: string;
}

const keptAttempts = 50;

/** The delivery of event `eventId` to endpoint `endpointId`: deterministic, so a repeated fan-out creates nothing twice. */
export function deliveryId(endpointId: string, eventId: string): string {
  return `dlv_${token(endpointId, eventId)}`;
}

/** The delivery log (KV). Records are small (payload ≤ ~20 kB) and updated by compare-and-set. */
export class DeliveryLog {
  private constructor(readonly kv: KV) {}

  static async open(js: JetStreamClient, bucket: string, replicas: number): Promise<DeliveryLog> {
    return new DeliveryLog(await js.views.kv(bucket, { history: 1, replicas }));
  }

  /** Stores a new delivery; an existing one (a repeated fan-out) is left as it is (false). */
  async create(rec: DeliveryRecord): Promise<boolean> {
    try {
      await this.kv.create(`d.${rec.endpoint}.${rec.id}`, JSON.stringify(rec));
      return true;
    } catch (err: unknown) {
      if (!isWrongLastSequence(err)) throw err;
      return false;
    }
  }

  async get(endpoint: string, id: string): Promise<DeliveryRecord | null> {
    return (await this.read(endpoint, id))?.record ?? null;
  }

  /** A record with its KV revision (for {@link update}'s first compare-and-set without a read). */
  async read(endpoint: string, id: string): Promise<{ record: DeliveryRecord; revision: number } | null> {
    if (!/^we_[0-9a-f]{24}$/.test(endpoint) || !/^dlv_[0-9a-f]{24}$/.test(id)) return null;
    const e = await this.kv.get(`d.${endpoint}.${id}`);
    return e === null || e.operation !== "PUT"
      ? null
      : { record: e.json<DeliveryRecord>(), revision: e.revision };
  }

  /** Every delivery of an endpoint, newest first. */
  async list(endpoint: string): Promise<DeliveryRecord[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys(`d.${endpoint}.*`)) keys.push(k);
    const read = await pMap(keys, (k) => this.kv.get(k), { concurrency: 64 });
    return read
      .flatMap((e) => (e === null || e.operation !== "PUT" ? [] : [e.json<DeliveryRecord>()]))
      .sort((a, b) =>
        a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1,
      );
  }

  /** Compare-and-set update; `fn` returning null changes nothing. */
  async update(
    endpoint: string,
    id: string,
    fn: (cur: DeliveryRecord) => DeliveryRecord | null,
    known?: { record: DeliveryRecord; revision: number },
  ): Promise<DeliveryRecord | null> {
    const key = `d.${endpoint}.${id}`;
    for (let attempt = 0; ; attempt++) {
      // The first try may start from a record just read (one round trip less per attempt).
      const e = attempt === 0 && known !== undefined ? known : await this.read(endpoint, id);
      if (e === null) return null;
      const next = fn(e.record);
      if (next === null) return e.record;
      try {
        await this.kv.update(key, JSON.stringify(next), e.revision);
        return next;
      } catch (err: unknown) {
        if (!isWrongLastSequence(err) || attempt >= 20) throw err;
      }
    }
  }

  /**
   * Remembers a fired usage alert (key `alerts.<token>`); false when it was already recorded.
   * Written after the event is in the outbox: a crash in between fires it again with the same id.
   */
  async markFired(alertToken: string, at: string): Promise<boolean> {
    try {
      await this.kv.create(`alerts.${alertToken}`, JSON.stringify({ at }));
      return true;
    } catch (err: unknown) {
      if (isWrongLastSequence(err)) return false;
      throw err;
    }
  }

  /** A marker (`markers.<name>`) holding an ISO time, or null. */
  async marker(name: string): Promise<string | null> {
    const e = await this.kv.get(`markers.${name}`);
    return e === null || e.operation !== "PUT" ? null : e.string();
  }

  async setMarker(name: string, at: string): Promise<void> {
    await this.kv.put(`markers.${name}`, at);
  }

  async clearMarker(name: string): Promise<void> {
    await this.kv.delete(`markers.${name}`);
  }

  async fired(alertToken: string): Promise<boolean> {
    const e = await this.kv.get(`alerts.${alertToken}`);
    return e !== null && e.operation === "PUT";
  }
}

/** Appends an attempt, keeping the last {@link keptAttempts}. */
export function withAttempt(rec: DeliveryRecord, a: DeliveryAttempt): DeliveryAttempt[] {
  return [...rec.attempts, a].slice(-keptAttempts);
}
