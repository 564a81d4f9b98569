/**
 * Test-controlled faults, set in-process on the server object (never over HTTP). Each injection
 * applies to the next `count` requests matching `endpoint` (a route name such as
 * `PUT /api.xro/2.0/ManualJournals`; omitted = any API endpoint), in the order injected.
 */
export interface Inject429 {
  count: number;
  endpoint?: string;
  /** Sent as `X-Rate-Limit-Problem`. @default "minute" */
  problem?: "minute" | "day" | "concurrent";
  /** Sent as `Retry-After` (seconds) for minute/day problems. @default 1 */
  retryAfterSec?: number;
}

export interface Inject5xx {
  count: number;
  status: 500 | 502 | 503 | 504;
  endpoint?: string;
  /**
   * `before`: fails in front of the endpoint (nothing executed, nothing saved under the
   * idempotency key). `after-commit`: the journals ARE created and the 5xx is what the client gets
   * (and what a replay under the same key returns). @default "before"
   */
  stage?: "before" | "after-commit";
}

export interface InjectLatency {
  ms: number;
  endpoint?: string;
  /** @default every matching request until cleared */
  count?: number;
}

export interface InjectDrop {
  count: number;
  endpoint?: string;
  /**
   * `after-commit`: the journals are created (and the answer saved under the key), then the
   * connection is destroyed before any response byte. `before-execution`: destroyed, no effect.
   */
  when: "after-commit" | "before-execution";
}

interface Armed<T> {
  spec: T;
  remaining: number;
}

function take<T extends { endpoint?: string }>(
  list: Armed<T>[],
  endpoint: string,
  match: (s: T) => boolean = () => true,
): T | undefined {
  const i = list.findIndex(
    (a) =>
      a.remaining > 0 && (a.spec.endpoint === undefined || a.spec.endpoint === endpoint) && match(a.spec),
  );
  if (i === -1) return undefined;
  const armed = list[i]!;
  if (--armed.remaining === 0) list.splice(i, 1);
  return armed.spec;
}

export class Faults {
  private readonly r429: Armed<Inject429>[] = [];
  private readonly r5xx: Armed<Inject5xx>[] = [];
  private readonly lat: Armed<InjectLatency>[] = [];
  private readonly drops: Armed<InjectDrop>[] = [];

  inject429(spec: Inject429): void {
    this.r429.push({ spec, remaining: spec.count });
  }
  inject5xx(spec: Inject5xx): void {
    this.r5xx.push({ spec, remaining: spec.count });
  }
  latency(spec: InjectLatency): void {
    this.lat.push({ spec, remaining: spec.count ?? Number.POSITIVE_INFINITY });
  }
  drop(spec: InjectDrop): void {
    this.drops.push({ spec, remaining: spec.count });
  }
  clear(): void {
    this.r429.length = 0;
    this.r5xx.length = 0;
    this.lat.length = 0;
    this.drops.length = 0;
  }

  /** @internal */
  take429(endpoint: string): Inject429 | undefined {
    return take(this.r429, endpoint);
  }
  /** @internal */
  take5xx(endpoint: string, stage: "before" | "after-commit"): Inject5xx | undefined {
    return take(this.r5xx, endpoint, (s) => (s.stage ?? "before") === stage);
  }
  /** @internal */
  takeLatency(endpoint: string): number {
    return take(this.lat, endpoint)?.ms ?? 0;
  }
  /** @internal */
  takeDrop(endpoint: string, when: InjectDrop["when"]): boolean {
    return take(this.drops, endpoint, (s) => s.when === when) !== undefined;
  }
}

/** Per-tenant limits (https://developer.xero.com/faq/limits). Tests shrink them; defaults are Xero's. */
export interface LimitOptions {
  /** Calls per `minuteWindowMs`. @default 60 */
  perMinute?: number;
  /** The "minute" window; tests shorten it. @default 60_000 */
  minuteWindowMs?: number;
  /** Calls per `dayWindowMs`. @default 5000 */
  perDay?: number;
  /** @default 86_400_000 */
  dayWindowMs?: number;
  /** Calls in progress at one time. @default 5 */
  concurrent?: number;
  /** App-wide calls per minute across tenants (reported only: one tenant here). @default 10_000 */
  appPerMinute?: number;
}

/**
 * Rolling windows per tenant. https://developer.xero.com/faq/limits: "Concurrent Limit: 5 calls in
 * progress at one time; Minute Limit: 60 calls per minute; Daily Limit: 5000 calls per day", and
 * "If you exceed either rate limit you will receive an HTTP 429". Whether Xero's windows roll or
 * reset on a boundary is not stated there (third-party guides say rolling 60 s / rolling 24 h);
 * rolling is the stricter reading for a client, so this server rolls. ASSUMED: a refused call is
 * not counted (a client that backs off gets through).
 */
export class Limits {
  readonly perMinute: number;
  readonly minuteWindowMs: number;
  readonly perDay: number;
  readonly dayWindowMs: number;
  readonly concurrent: number;
  readonly appPerMinute: number;
  private readonly minute = new Map<string, number[]>();
  private readonly day = new Map<string, number[]>();
  private readonly inflight = new Map<string, number>();
  enabled = true;

  constructor(o: LimitOptions = {}) {
    this.perMinute = o.perMinute ?? 60;
    this.minuteWindowMs = o.minuteWindowMs ?? 60_000;
    this.perDay = o.perDay ?? 5000;
    this.dayWindowMs = o.dayWindowMs ?? 86_400_000;
    this.concurrent = o.concurrent ?? 5;
    this.appPerMinute = o.appPerMinute ?? 10_000;
  }

  private window(map: Map<string, number[]>, tenant: string, now: number, span: number): number[] {
    const w = map.get(tenant) ?? [];
    while (w.length > 0 && w[0]! <= now - span) w.shift();
    map.set(tenant, w);
    return w;
  }

  /**
   * @internal Admits one call or says which limit refused it and when to retry (seconds, rounded
   * up: Retry-After is whole seconds).
   */
  admit(
    tenant: string,
    now: number,
  ): { ok: true } | { ok: false; problem: "minute" | "day" | "concurrent"; retryAfterSec?: number } {
    if (!this.enabled) return { ok: true };
    if ((this.inflight.get(tenant) ?? 0) >= this.concurrent) return { ok: false, problem: "concurrent" };
    const d = this.window(this.day, tenant, now, this.dayWindowMs);
    if (d.length >= this.perDay) {
      return {
        ok: false,
        problem: "day",
        retryAfterSec: Math.max(1, Math.ceil((d[0]! + this.dayWindowMs - now) / 1000)),
      };
    }
    const m = this.window(this.minute, tenant, now, this.minuteWindowMs);
    if (m.length >= this.perMinute) {
      return {
        ok: false,
        problem: "minute",
        retryAfterSec: Math.max(1, Math.ceil((m[0]! + this.minuteWindowMs - now) / 1000)),
      };
    }
    m.push(now);
    d.push(now);
    return { ok: true };
  }

  /** @internal */
  enter(tenant: string): void {
    this.inflight.set(tenant, (this.inflight.get(tenant) ?? 0) + 1);
  }
  /** @internal */
  leave(tenant: string): void {
    this.inflight.set(tenant, Math.max(0, (this.inflight.get(tenant) ?? 0) - 1));
  }

  /** Remaining calls, for the `X-MinLimit-Remaining` / `X-DayLimit-Remaining` headers. */
  remaining(tenant: string, now: number): { minute: number; day: number } {
    return {
      minute: Math.max(0, this.perMinute - this.window(this.minute, tenant, now, this.minuteWindowMs).length),
      day: Math.max(0, this.perDay - this.window(this.day, tenant, now, this.dayWindowMs).length),
    };
  }

  reset(): void {
    this.minute.clear();
    this.day.clear();
  }
}
