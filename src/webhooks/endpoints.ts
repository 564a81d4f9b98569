import { createHash, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import type { JetStreamClient, KV } from "nats";
import { z } from "zod";
import { isWrongLastSequence, watchLoaded } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";
import { webhookEventTypes, type WebhookEventType } from "./emitter.js";

/** One signing secret of an endpoint. `expires_at` is set on the previous secret by a rotation. */
export interface EndpointSecret {
  /** `whsec_` + base64 of 32 random bytes (the spec allows 24-64). Never logged, never listed. */
  secret: string;
  created_at: string;
  expires_at: string | null;
}

/** A registered webhook endpoint as stored (NATS KV `<prefix>_webhook_endpoints`, key `endpoints.<id>`). */
export interface WebhookEndpoint {
  id: string;
  url: string;
  /** Event types delivered to it. */
  event_types: WebhookEventType[];
  description: string;
  status: "enabled" | "disabled";
  /** Why it was disabled (`gone`: it answered 410). */
  disabled_reason: string | null;
  secrets: EndpointSecret[];
  created_at: string;
  updated_at: string;
}

/** What the API shows of an endpoint: everything but the secrets. */
export type EndpointView = Omit<WebhookEndpoint, "secrets"> & { secret_rotated_at: string | null };

export function viewOf(e: WebhookEndpoint): EndpointView {
  const { secrets, ...rest } = e;
  const current = secrets[0];
  return { ...rest, secret_rotated_at: secrets.length > 1 && current ? current.created_at : null };
}

/** A new `whsec_` secret: 32 random bytes, base64 (Standard Webhooks: 24-64 bytes). */
export function newSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

/** Secrets that sign a delivery at `nowMs`: the current one and any still inside its rotation overlap. */
export function signingSecrets(e: WebhookEndpoint, nowMs: number): string[] {
  return e.secrets
    .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > nowMs)
    .map((s) => s.secret);
}

/**
 * Hosts refused when plain http is not allowed: loopback, private, link-local (cloud metadata at
 * 169.254.169.254), unique-local and unspecified literals, and `localhost`. NOTE: this checks the
 * URL as written only. A DNS name that resolves (or is rebound) to a private address is not
 * caught here: an installation that must prevent SSRF sends webhooks through an egress proxy.
 */
export function isPrivateHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  const v = isIP(host);
  if (v === 4) {
    const [a, b] = host.split(".").map(Number) as [number, number];
    return (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168)
    );
  }
  if (v === 6) {
    if (host === "::" || host === "::1") return true;
    if (host.startsWith("::ffff:")) return isPrivateHost(host.slice(7));
    return /^(fc|fd|fe8|fe9|fea|feb)/.test(host);
  }
  return false;
}

/** The request body of `POST /v1/webhook-endpoints`; `allowHttp` from TALLY_WEBHOOK_ALLOW_HTTP. */
export function endpointInputSchema(allowHttp: boolean) {
  return z.strictObject({
    url: z
      .string({ error: "must be a URL" })
      .max(2048, "must be at most 2048 characters")
      .superRefine((text, ctx) => {
        let u: URL;
        try {
          u = new URL(text);
        } catch {
          ctx.addIssue({
            code: "custom",
            message: "must be an absolute URL such as https://example.com/hooks",
          });
          return;
        }
        if (u.protocol !== "https:" && u.protocol !== "http:") {
          ctx.addIssue({ code: "custom", message: "must be an http(s) URL" });
        } else if (u.protocol === "http:" && !allowHttp) {
          ctx.addIssue({
            code: "custom",
            message: "must be https (plain http needs TALLY_WEBHOOK_ALLOW_HTTP=true)",
          });
        }
        if (u.username !== "" || u.password !== "") {
          ctx.addIssue({ code: "custom", message: "must not carry credentials (user:password@)" });
        }
        if (!allowHttp && isPrivateHost(u.hostname)) {
          ctx.addIssue({
            code: "custom",
            message: "must not point at a loopback, private or link-local address",
          });
        }
      }),
    event_types: z
      .array(z.enum(webhookEventTypes, { error: `must be one of ${webhookEventTypes.join(", ")}` }), {
        error: "must be a list of event types",
      })
      .min(1, "must name at least one event type (omit it for all)")
      .optional(),
    description: z
      .string({ error: "must be a string" })
      .max(512, "must be at most 512 characters")
      .default(""),
  });
}

export type EndpointInput = z.output<ReturnType<typeof endpointInputSchema>>;

/**
 * Webhook endpoints in NATS KV. Every change is a compare-and-set on the revision read, so the
 * edge (create, rotate, delete) and a dispatcher (disable on 410) never overwrite each other.
 * `follow()` keeps an in-memory copy current through a KV watch (the dispatcher reads it per event).
 */
export class EndpointStore {
  private readonly cache = new Map<string, WebhookEndpoint>();
  private stopWatch: (() => void) | null = null;

  private constructor(private readonly kv: KV) {}

  static async open(js: JetStreamClient, bucket: string, replicas: number): Promise<EndpointStore> {
    return new EndpointStore(await js.views.kv(bucket, { history: 1, replicas }));
  }

  /** Starts the watch; resolves once every stored endpoint is in memory. */
  async follow(log?: Logger): Promise<void> {
    if (this.stopWatch !== null) return;
    const w = await watchLoaded(
      this.kv,
      { key: "endpoints.*" },
      (e) => {
        const id = e.key.slice("endpoints.".length);
        if (e.operation === "PUT") this.cache.set(id, e.json<WebhookEndpoint>());
        else this.cache.delete(id);
      },
      "webhook endpoints watch",
      { reset: () => this.cache.clear(), ...(log ? { log } : {}) },
    );
    this.stopWatch = w.stop;
  }

  stop(): void {
    this.stopWatch?.();
    this.stopWatch = null;
  }

  /** The followed copy (see {@link follow}). */
  cached(): WebhookEndpoint[] {
    return [...this.cache.values()];
  }

  cachedGet(id: string): WebhookEndpoint | undefined {
    return this.cache.get(id);
  }

  async create(input: EndpointInput, nowMs = Date.now()): Promise<WebhookEndpoint> {
    const at = new Date(nowMs).toISOString();
    const id = `we_${randomBytes(12).toString("hex")}`;
    const e: WebhookEndpoint = {
      id,
      url: input.url,
      event_types: input.event_types ?? [...webhookEventTypes],
      description: input.description,
      status: "enabled",
      disabled_reason: null,
      secrets: [{ secret: newSecret(), created_at: at, expires_at: null }],
      created_at: at,
      updated_at: at,
    };
    await this.kv.create(`endpoints.${id}`, JSON.stringify(e));
    this.cache.set(id, e);
    return e;
  }

  async get(id: string): Promise<WebhookEndpoint | null> {
    if (!/^we_[0-9a-f]{24}$/.test(id)) return null;
    const entry = await this.kv.get(`endpoints.${id}`);
    return entry === null || entry.operation !== "PUT" ? null : entry.json<WebhookEndpoint>();
  }

  async list(): Promise<WebhookEndpoint[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys("endpoints.*")) keys.push(k);
    const read = await Promise.all(keys.map((k) => this.get(k.slice("endpoints.".length))));
    return read
      .filter((e): e is WebhookEndpoint => e !== null)
      .sort((a, b) =>
        a.created_at === b.created_at ? (a.id < b.id ? -1 : 1) : a.created_at < b.created_at ? -1 : 1,
      );
  }

  async delete(id: string): Promise<boolean> {
    if ((await this.get(id)) === null) return false;
    await this.kv.delete(`endpoints.${id}`);
    this.cache.delete(id);
    return true;
  }

  /**
   * A new current secret; the previous ones keep signing until `overlapMs` from now (or their
   * earlier expiry). Expired secrets are dropped. Resolves with the endpoint (new secret first).
   */
  rotate(id: string, overlapMs: number, nowMs = Date.now()): Promise<WebhookEndpoint | null> {
    return this.update(id, (e) => {
      const at = new Date(nowMs).toISOString();
      const until = nowMs + overlapMs;
      const old = e.secrets
        .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > nowMs)
        .map((s) => ({
          ...s,
          expires_at: new Date(
            s.expires_at === null ? until : Math.min(until, Date.parse(s.expires_at)),
          ).toISOString(),
        }));
      return {
        ...e,
        secrets: [{ secret: newSecret(), created_at: at, expires_at: null }, ...old],
        updated_at: at,
      };
    });
  }

  /** Disables an endpoint (a 410 from it); deliveries to it stop. */
  disable(id: string, reason: string, nowMs = Date.now()): Promise<WebhookEndpoint | null> {
    return this.update(id, (e) =>
      e.status === "disabled"
        ? null
        : { ...e, status: "disabled", disabled_reason: reason, updated_at: new Date(nowMs).toISOString() },
    );
  }

  /** Compare-and-set loop; `fn` returning null leaves the record as it is. */
  private async update(
    id: string,
    fn: (e: WebhookEndpoint) => WebhookEndpoint | null,
  ): Promise<WebhookEndpoint | null> {
    for (let attempt = 0; ; attempt++) {
      const entry = await this.kv.get(`endpoints.${id}`);
      if (entry === null || entry.operation !== "PUT") return null;
      const cur = entry.json<WebhookEndpoint>();
      const next = fn(cur);
      if (next === null) return cur;
      try {
        await this.kv.update(`endpoints.${id}`, JSON.stringify(next), entry.revision);
        this.cache.set(id, next);
        return next;
      } catch (err: unknown) {
        if (!isWrongLastSequence(err) || attempt >= 20) throw err;
      }
    }
  }
}

/** A short stable token of a text (KV keys cannot hold every character an event id may have). */
export function token(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\u0000")).digest("hex").slice(0, 24);
}
