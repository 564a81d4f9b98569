import type { ConsumerMessages, JetStreamClient, JsMsg } from "nats";
import { Webhook } from "standardwebhooks";
import { Agent, request } from "undici";
import type { BusNames } from "../bus/index.js";
import type { WebhookConfig } from "../config/index.js";
import { Semaphore } from "../lib/semaphore.js";
import type { Logger } from "../observability/index.js";
import { deliveryId, withAttempt, type DeliveryLog, type DeliveryRecord } from "./deliveries.js";
import { signingSecrets, type EndpointStore, type WebhookEndpoint } from "./endpoints.js";
import {
  attemptSeconds,
  attemptsInflight,
  deliveriesCreated,
  deliveryAttempts,
  endpointDeferrals,
} from "./metrics.js";
import type { OutboxBatch, OutboxMessage } from "./outbox.js";
import { decideAttempt, parseRetryAfter, type AttemptResult } from "./retry.js";

/** A message on `<prefix>.webhooks.deliveries.<endpoint>`: attempt this delivery (now, or `replay`: once more now). */
export interface DeliveryTask {
  delivery: string;
  endpoint: string;
  replay?: boolean;
}

/** Publishes a replay of a delivery: a new attempt now, with the same `webhook-id` and body. */
export async function requestReplay(
  js: JetStreamClient,
  names: BusNames,
  rec: DeliveryRecord,
): Promise<void> {
  const task: DeliveryTask = { delivery: rec.id, endpoint: rec.endpoint, replay: true };
  await js.publish(names.webhookDeliverySubject(rec.endpoint), JSON.stringify(task));
}

export interface DispatcherDeps {
  js: JetStreamClient;
  names: BusNames;
  endpoints: EndpointStore;
  deliveries: DeliveryLog;
  config: WebhookConfig;
  log: Logger;
  now?: () => number;
  random?: () => number;
}

/**
 * Per-endpoint admission: `limit` attempts at once, `queued` more waiting in this process (kept
 * alive with `working()`); beyond that `enter` says no and the task goes back to JetStream with a
 * short delay, so a slow endpoint's backlog never fills the dispatcher's slots.
 */
class EndpointGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly queued: number,
  ) {}

  async enter(): Promise<boolean> {
    if (this.active < this.limit) {
      this.active++;
      return true;
    }
    if (this.waiting.length >= this.queued) return false;
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    return true;
  }

  /** True when the gate is idle (it can be forgotten). */
  leave(): boolean {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.active--;
    return this.active === 0 && this.waiting.length === 0;
  }
}

/** Body bytes of a receiver's response read at most (then the connection is dropped). */
const maxResponseBytes = 64 * 1024;

/**
 * Delivers the outbox. Two durable JetStream consumers, shared by every dispatcher process:
 *
 * - fan-out: each outbox event becomes one delivery per enabled endpoint subscribed to its type
 *   (a record in the delivery log, created if absent, and a task message whose `Nats-Msg-Id` is the
 *   delivery id), then the event is acked. A crash in between repeats the fan-out; ids make the
 *   repeat create nothing twice.
 * - deliver: each task is one HTTP attempt, recorded in the log, then the task is acked (done)
 *   or nak'd with the retry delay (JetStream redelivers it then). The task is acked only after
 *   the outcome was recorded, so a dispatcher SIGKILLed mid-attempt has the task redelivered
 *   after TALLY_WEBHOOK_ACK_WAIT_MS and the attempt made again (at least once; receivers dedupe
 *   on `webhook-id`).
 *
 * NOTE: no head-of-line blocking. Tasks are handled concurrently: each endpoint has a gate of
 * TALLY_WEBHOOK_ENDPOINT_CONCURRENCY attempts in flight plus a short queue (4x that) in this
 * process; a task beyond goes back to JetStream with a short delay instead of waiting in line,
 * and undici keeps a connection pool per origin. Only an admitted attempt takes one of the
 * TALLY_WEBHOOK_MAX_INFLIGHT slots, so a slow or dead endpoint holds at most its own share of
 * them (with defaults 8 of 256: 32 endpoints all hanging at once before healthy ones wait).
 */
export class WebhookDispatcher {
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly agent: Agent;
  private readonly signers = new Map<string, Webhook>();
  private readonly gates = new Map<string, EndpointGate>();
  private readonly attemptSlots: Semaphore;
  private readonly inflight = new Set<Promise<void>>();
  private fanout: ConsumerMessages | null = null;
  private deliver: ConsumerMessages | null = null;
  private loops: Promise<void>[] = [];
  private stopped = false;

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.attemptSlots = new Semaphore(deps.config.maxInflight);
    this.agent = new Agent({
      connections: deps.config.endpointConcurrency,
      connect: { timeout: deps.config.timeoutMs },
      headersTimeout: deps.config.timeoutMs,
      bodyTimeout: deps.config.timeoutMs,
    });
  }

  /** Starts both consumers (the endpoint store must be followed: `endpoints.follow()`). */
  async start(): Promise<void> {
    const { js, names, config } = this.deps;
    const fan = await js.consumers.get(names.webhookStream, names.webhookFanoutConsumer);
    const del = await js.consumers.get(names.webhookStream, names.webhookDeliverConsumer);
    this.fanout = await fan.consume({ max_messages: 256 });
    this.deliver = await del.consume({ max_messages: Math.min(1000, config.maxInflight) });
    const fanSlots = new Semaphore(64);
    // Deliveries take no slot while they wait at their endpoint's gate (see attempt()): what this
    // process holds is bounded by the consumer's max_ack_pending and each gate's queue.
    const noSlots = new Semaphore(Number.MAX_SAFE_INTEGER);
    this.loops = [
      this.loop(this.fanout, fanSlots, (m) => this.fanOut(m)),
      this.loop(this.deliver, noSlots, (m) => this.attempt(m)),
    ];
  }

  /** Stops taking messages and waits for attempts in flight (each bounded by the timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.fanout?.stop();
    this.deliver?.stop();
    await Promise.all(this.loops.map((l) => l.catch(() => undefined)));
    await Promise.all([...this.inflight]);
    await this.agent.close();
  }

  private async loop(messages: ConsumerMessages, slots: Semaphore, handle: (m: JsMsg) => Promise<void>) {
    for await (const m of messages) {
      await slots.acquire();
      const p = handle(m)
        .catch((err: unknown) => {
          this.deps.log.error({ err, subject: m.subject }, "webhook message failed; redelivered later");
          m.nak(1000);
        })
        .finally(() => {
          slots.release();
          this.inflight.delete(p);
        });
      this.inflight.add(p);
    }
  }

  private async fanOut(m: JsMsg): Promise<void> {
    // One event, or a batch of them (OutboxEmitter.emitMany: the close's invoice.finalized).
    const body = m.json<OutboxMessage | OutboxBatch>();
    const events = "events" in body ? body.events : [body];
    const at = new Date(this.now()).toISOString();
    const endpoints = this.deps.endpoints.cached().filter((e) => e.status === "enabled");
    await Promise.all(
      events.map(async (ev) => {
        const payload = JSON.stringify({ type: ev.type, timestamp: ev.timestamp, data: ev.data });
        if (payload.length > 20 * 1024) {
          this.deps.log.warn(
            { event: ev.id, type: ev.type, bytes: payload.length },
            "webhook payload over 20 kB",
          );
        }
        const targets = endpoints.filter((e) => e.event_types.includes(ev.type));
        await Promise.all(targets.map((e) => this.createDelivery(e, ev, payload, at)));
      }),
    );
    m.ack();
  }

  /**
   * The delivery of one event to one endpoint: its record (created if absent) and its task
   * (`Nats-Msg-Id` = delivery id). A repeated fan-out creates neither twice within the
   * duplicate window, and a task of a delivery already settled is only acked.
   */
  private async createDelivery(e: WebhookEndpoint, ev: OutboxMessage, payload: string, at: string) {
    const id = deliveryId(e.id, ev.id);
    const created = await this.deps.deliveries.create({
      id,
      endpoint: e.id,
      event_id: ev.id,
      event_type: ev.type,
      status: "pending",
      scheduled_attempts: 0,
      attempts: [],
      next_attempt_at: at,
      payload,
      created_at: at,
      updated_at: at,
    });
    if (!created) {
      // The event was raised again (a catch-up after a crash, or past the duplicate window):
      // a delivery already attempted has its own task and schedule; a second one would double
      // its attempts. One never attempted may have lost its task in a crash: publish it again
      // (within the window JetStream drops it as a duplicate).
      const cur = await this.deps.deliveries.get(e.id, id);
      if (cur !== null && (cur.status !== "pending" || cur.attempts.length > 0)) return;
    }
    const task: DeliveryTask = { delivery: id, endpoint: e.id };
    const ack = await this.deps.js.publish(
      this.deps.names.webhookDeliverySubject(e.id),
      JSON.stringify(task),
      {
        msgID: id,
      },
    );
    if (!ack.duplicate) deliveriesCreated.inc();
  }

  private async attempt(m: JsMsg): Promise<void> {
    const task = m.json<DeliveryTask>();
    const { deliveries, endpoints } = this.deps;
    const read = await deliveries.read(task.endpoint, task.delivery);
    if (read === null) {
      m.ack();
      return;
    }
    const rec = read.record;
    const ep = endpoints.cachedGet(task.endpoint) ?? (await endpoints.get(task.endpoint));
    if (ep === null || ep === undefined || ep.status !== "enabled") {
      await deliveries.update(rec.endpoint, rec.id, (cur) =>
        cur.status === "pending"
          ? {
              ...cur,
              status: "skipped",
              next_attempt_at: null,
              updated_at: new Date(this.now()).toISOString(),
            }
          : null,
      );
      deliveryAttempts.inc({ outcome: "skipped" });
      m.ack();
      return;
    }
    const replay = task.replay === true;
    // A scheduled task for a delivery already settled (a redelivery after a crash, or a replay
    // succeeded first) has nothing left to do.
    if (!replay && rec.status !== "pending") {
      m.ack();
      return;
    }
    const keepalive = setInterval(
      () => m.working(),
      Math.max(500, Math.floor(this.deps.config.ackWaitMs / 3)),
    );
    const gate = this.gate(ep.id);
    if (!(await gate.enter())) {
      // The endpoint has its share in flight and its short queue is full: back to JetStream.
      clearInterval(keepalive);
      endpointDeferrals.inc();
      m.nak(250 + Math.floor(this.random() * 500));
      return;
    }
    await this.attemptSlots.acquire();
    attemptsInflight.inc();
    try {
      const started = this.now();
      const result = await this.post(ep, rec);
      const attempt = {
        at: new Date(started).toISOString(),
        trigger: replay ? ("replay" as const) : ("schedule" as const),
        status_code: result.status,
        error: result.error,
        duration_ms: this.now() - started,
      };
      const scheduled = replay ? rec.scheduled_attempts : rec.scheduled_attempts + 1;
      const decision = decideAttempt(result, scheduled, this.deps.config.retryScheduleMs, this.random());
      const at = new Date(this.now()).toISOString();
      let status: DeliveryRecord["status"];
      let next: string | null = null;
      switch (decision.kind) {
        case "success":
          status = "succeeded";
          break;
        case "gone":
          status = "failed";
          await endpoints.disable(ep.id, "gone: the endpoint answered 410", this.now());
          this.deps.log.warn(
            { endpoint: ep.id, delivery: rec.id },
            "webhook endpoint answered 410; disabled",
          );
          break;
        case "exhausted":
          status = "failed";
          break;
        case "retry":
          // A failed replay does not start a new schedule: the delivery keeps its state.
          status = replay ? rec.status : "pending";
          next = replay ? rec.next_attempt_at : new Date(this.now() + decision.delayMs).toISOString();
          break;
      }
      await deliveries.update(
        rec.endpoint,
        rec.id,
        (cur) => ({
          ...cur,
          status: cur.status === "succeeded" ? "succeeded" : status,
          scheduled_attempts: replay ? cur.scheduled_attempts : cur.scheduled_attempts + 1,
          attempts: withAttempt(cur, attempt),
          next_attempt_at: status === "pending" ? next : null,
          updated_at: at,
        }),
        read,
      );
      deliveryAttempts.inc({ outcome: decision.kind });
      if (decision.kind === "retry" && !replay) m.nak(decision.delayMs);
      else m.ack();
    } finally {
      clearInterval(keepalive);
      attemptsInflight.dec();
      this.attemptSlots.release();
      if (gate.leave()) this.gates.delete(ep.id);
    }
  }

  /** One signed POST. Never throws: no response is `status: null` with the reason. */
  private async post(
    ep: WebhookEndpoint,
    rec: DeliveryRecord,
  ): Promise<AttemptResult & { error: string | null }> {
    const sentAt = new Date(this.now());
    const signature = signingSecrets(ep, sentAt.getTime())
      .map((s) => this.signer(s).sign(rec.event_id, sentAt, rec.payload))
      .join(" ");
    const t = performance.now();
    try {
      const res = await request(ep.url, {
        method: "POST",
        dispatcher: this.agent,
        headers: {
          "content-type": "application/json",
          "user-agent": "Tally-Webhooks/1",
          "webhook-id": rec.event_id,
          "webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
          "webhook-signature": signature,
        },
        body: rec.payload,
        signal: AbortSignal.timeout(this.deps.config.timeoutMs),
      });
      // Read (a bounded part of) the body so the connection can be reused.
      let read = 0;
      for await (const chunk of res.body) {
        read += (chunk as Buffer).length;
        if (read > maxResponseBytes) {
          res.body.destroy();
          break;
        }
      }
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      return {
        status: res.statusCode,
        retryAfterMs: ok ? undefined : parseRetryAfter(res.headers["retry-after"], this.now()),
        error: ok ? null : `status ${res.statusCode}`,
      };
    } catch (err: unknown) {
      const e = err as { name?: string; code?: string; message?: string };
      const timeout =
        e.name === "TimeoutError" ||
        e.code === "UND_ERR_HEADERS_TIMEOUT" ||
        e.code === "UND_ERR_BODY_TIMEOUT";
      return {
        status: null,
        error: timeout
          ? "timeout"
          : `connection: ${e.code ?? e.name ?? "error"}: ${e.message ?? ""}`.slice(0, 300),
      };
    } finally {
      attemptSeconds.observe((performance.now() - t) / 1000);
    }
  }

  private gate(endpoint: string): EndpointGate {
    let g = this.gates.get(endpoint);
    if (g === undefined) {
      const limit = this.deps.config.endpointConcurrency;
      this.gates.set(endpoint, (g = new EndpointGate(limit, limit * 4)));
    }
    return g;
  }

  private signer(secret: string): Webhook {
    let w = this.signers.get(secret);
    if (w === undefined) {
      w = new Webhook(secret);
      this.signers.set(secret, w);
    }
    return w;
  }

  /** True once {@link stop} was called. */
  get isStopped(): boolean {
    return this.stopped;
  }
}
