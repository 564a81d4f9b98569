import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from "nats";
import type { BusNames } from "../bus/index.js";
import type { Config } from "../config/index.js";
import type { OutboundEvent, WebhookEmitter } from "./emitter.js";
import { token } from "./endpoints.js";
import { outboxEvents } from "./metrics.js";

/** An event as stored in the outbox: the emitted event and when it was raised (the envelope's `timestamp`). */
export interface OutboxMessage extends OutboundEvent {
  readonly timestamp: string;
}

/** Several events in one outbox message ({@link OutboxEmitter.emitMany}). */
export interface OutboxBatch {
  readonly events: OutboxMessage[];
}

/** A batch holds at most this many events and about this many bytes (JetStream's max_msg_size is 1 MiB here). */
const batchEvents = 200;
const batchBytes = 256 * 1024;

/** JetStream's duplicate window of the outbox: an event raised again within it is stored once. */
export const outboxDuplicateWindowMs = 10 * 60_000;

/** Standard Webhooks ids must not contain `.` (the signed string is `id.timestamp.body`). */
const eventIdPattern = /^[A-Za-z0-9_:-]{1,200}$/;

/**
 * Creates or updates the webhook stream and its two consumers. One work-queue stream holds the
 * outbox (`<prefix>.webhooks.outbox`, one message per event) and the deliveries
 * (`<prefix>.webhooks.deliveries.<endpoint>`, one per event and endpoint); each message stays
 * until a dispatcher acked it, so a dispatcher killed at any point loses nothing.
 */
export async function ensureWebhookStream(
  jsm: JetStreamManager,
  config: Config,
  names: BusNames,
): Promise<void> {
  const sc: Partial<StreamConfig> = {
    name: names.webhookStream,
    subjects: [names.webhookOutboxSubject, names.webhookDeliverySubjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: Math.max(64 * 1024 * 1024, Math.floor(config.nats.streamMaxBytes / 4)),
    max_msg_size: 1024 * 1024,
    num_replicas: config.nats.replicas,
    duplicate_window: nanos(outboxDuplicateWindowMs),
  };
  try {
    await jsm.streams.info(names.webhookStream);
    await jsm.streams.update(names.webhookStream, sc);
  } catch (err: unknown) {
    const e = err as { code?: string; api_error?: { err_code?: number } };
    // 10059: stream not found (as in bus/stream.ts).
    if (e.api_error?.err_code !== 10059 && e.code !== "404") throw err;
    await jsm.streams.add(sc);
  }
  const ackWait = nanos(config.webhooks.ackWaitMs);
  const consumers = [
    {
      durable_name: names.webhookFanoutConsumer,
      filter_subject: names.webhookOutboxSubject,
      max_ack_pending: 1000,
    },
    {
      durable_name: names.webhookDeliverConsumer,
      filter_subject: names.webhookDeliverySubjects,
      // Deliveries waiting for a retry were nak'd with a delay and are not pending.
      max_ack_pending: Math.max(1000, config.webhooks.maxInflight * 4),
    },
  ];
  for (const c of consumers) {
    const cfg = {
      ...c,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: ackWait,
      max_deliver: -1,
    };
    try {
      await jsm.consumers.info(names.webhookStream, c.durable_name);
      await jsm.consumers.update(names.webhookStream, c.durable_name, {
        ack_wait: ackWait,
        max_ack_pending: c.max_ack_pending,
      });
    } catch {
      await jsm.consumers.add(names.webhookStream, cfg);
    }
  }
}

/**
 * The {@link WebhookEmitter} of the outbox: `emit` resolves once JetStream stored the event (or
 * recognised it as a duplicate: the event id is the `Nats-Msg-Id`), so an event that was emitted
 * is delivered at least once, whatever process dies afterwards.
 */
export class OutboxEmitter implements WebhookEmitter {
  constructor(
    private readonly js: JetStreamClient,
    private readonly names: BusNames,
    private readonly now: () => number = Date.now,
  ) {}

  async emit(event: OutboundEvent): Promise<void> {
    checkId(event);
    const msg: OutboxMessage = { ...event, timestamp: new Date(this.now()).toISOString() };
    const ack = await this.js.publish(this.names.webhookOutboxSubject, JSON.stringify(msg), {
      msgID: event.id,
    });
    outboxEvents.inc({ type: event.type, result: ack.duplicate ? "duplicate" : "stored" });
  }

  /**
   * Emits many events in batches (one outbox message per up to 200 events / 256 kB), up to
   * `inflight` batches awaiting their ack at once: the close's 100,000 invoice.finalized cost
   * 500 publishes, not 100,000. A batch's `Nats-Msg-Id` is a digest of its event ids, so the same
   * batch raised again is stored once; an event raised again in another batch (or alone) is
   * stored again, and its fan-out then creates nothing new (delivery ids are per endpoint and
   * event) or, past the duplicate window, a task the dispatcher acks without sending when the
   * delivery already succeeded. Resolves when every batch is stored.
   */
  async emitMany(events: readonly OutboundEvent[], inflight = 16): Promise<void> {
    const timestamp = new Date(this.now()).toISOString();
    const batches: OutboxMessage[][] = [];
    let cur: OutboxMessage[] = [];
    let bytes = 0;
    for (const e of events) {
      checkId(e);
      const msg: OutboxMessage = { ...e, timestamp };
      const size = JSON.stringify(msg.data).length + 200;
      if (cur.length > 0 && (cur.length >= batchEvents || bytes + size > batchBytes)) {
        batches.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(msg);
      bytes += size;
    }
    if (cur.length > 0) batches.push(cur);
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        const body: OutboxBatch = { events: batch };
        const ack = await this.js.publish(this.names.webhookOutboxSubject, JSON.stringify(body), {
          msgID: `batch_${token(...batch.map((b) => b.id))}`,
        });
        for (const b of batch)
          outboxEvents.inc({ type: b.type, result: ack.duplicate ? "duplicate" : "stored" });
      }
    };
    await Promise.all(Array.from({ length: Math.min(inflight, batches.length) }, worker));
  }
}

function checkId(event: OutboundEvent): void {
  if (!eventIdPattern.test(event.id)) {
    throw new Error(`webhook event id ${JSON.stringify(event.id)} must match ${eventIdPattern.source}`);
  }
}

/**
 * Emits many events through any emitter: batched when it is the outbox
 * ({@link OutboxEmitter.emitMany}), else pipelined, `inflight` at a time.
 */
export async function emitAll(
  emitter: WebhookEmitter,
  events: readonly OutboundEvent[],
  inflight = 256,
): Promise<void> {
  if (emitter instanceof OutboxEmitter) return emitter.emitMany(events);
  let next = 0;
  const worker = async () => {
    while (next < events.length) await emitter.emit(events[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(inflight, events.length) }, worker));
}
