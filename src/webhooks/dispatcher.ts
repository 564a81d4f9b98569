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
import type { OutboxMessage } from "./outbox.js";
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
 * NOTE: no head-of-line blocking. Tasks are handled concurrently (up to TALLY_WEBHOOK_MAX_INFLIGHT);
 * an endpoint already at TALLY_WEBHOOK_ENDPOINT_CONCURRENCY attempts gets its further tasks put back
 * with a short delay instead of occupying slots, and each endpoint origin has its own connection
 * pool, so a slow or dead endpoint only ever holds its own share.
 */
export class WebhookDispatcher {
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly agent: Agent;
  private readonly signers = new Map<string, Webhook>();
  private readonly perEndpoint = new Map<string, number>();
  private readonly inflight = new Set<Promise<void>>();
  private fanout: ConsumerMessages | null = null;
  private deliver: ConsumerMessages | null = null;
  private loops: Promise<void>[] = [];
  private stopped = false;

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
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
    const attemptSlots = new Semaphore(config.maxInflight);
    this.loops = [
      this.loop(this.fanout, fanSlots, (m) => this.fanOut(m)),
      this.loop(this.deliver, attemptSlots, (m) => this.attempt(m)),
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
    const ev = m.json<OutboxMessage>();
    const payload = JSON.stringify({ type: ev.type, timestamp: ev.timestamp, data: ev.data });
    if (payload.length > 20 * 1024) {
      this.deps.log.warn(
        { event: ev.id, type: ev.type, bytes: payload.length },
        "webhook payload over 20 kB",
      );
    }
    const at = new Date(this.now()).toISOString();
    const targets = this.deps.endpoints
      .cached()
      .filter((e) => e.status === "enabled" && e.event_types.includes(ev.type));
    await Promise.all(
      targets.map(async (e) => {
        const id = deliveryId(e.id, ev.id);
        await this.deps.deliveries.create({
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
        const task: DeliveryTask = { delivery: id, endpoint: e.id };
        const ack = await this.deps.js.publish(
          this.deps.names.webhookDeliverySubject(e.id),
          JSON.stringify(task),
          {
            msgID: id,
          },
        );
        if (!ack.duplicate) deliveriesCreated.inc();
      }),
    );
    m.ack();
  }

  private async attempt(m: JsMsg): Promise<void> {
    const task = m.json<DeliveryTask>();
    const { deliveries, endpoints } = this.deps;
    const rec = await deliveries.get(task.endpoint, task.delivery);
    if (rec === null) {
      m.ack();
      return;
    }
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
    const busy = this.perEndpoint.get(ep.id) ?? 0;
    if (busy >= this.deps.config.endpointConcurrency) {
      endpointDeferrals.inc();
      m.nak(250 + Math.floor(this.random() * 500));
      return;
    }
    this.perEndpoint.set(ep.id, busy + 1);
    attemptsInflight.inc();
    const keepalive = setInterval(
      () => m.working(),
      Math.max(500, Math.floor(this.deps.config.ackWaitMs / 3)),
    );
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
      await deliveries.update(rec.endpoint, rec.id, (cur) => ({
        ...cur,
        status: cur.status === "succeeded" ? "succeeded" : status,
        scheduled_attempts: replay ? cur.scheduled_attempts : cur.scheduled_attempts + 1,
        attempts: withAttempt(cur, attempt),
        next_attempt_at: status === "pending" ? next : null,
        updated_at: at,
      }));
      deliveryAttempts.inc({ outcome: decision.kind });
      if (decision.kind === "retry" && !replay) m.nak(decision.delayMs);
      else m.ack();
    } finally {
      clearInterval(keepalive);
      attemptsInflight.dec();
      const n = (this.perEndpoint.get(ep.id) ?? 1) - 1;
      if (n <= 0) this.perEndpoint.delete(ep.id);
      else this.perEndpoint.set(ep.id, n);
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
