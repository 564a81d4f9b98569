/**
 * Test-controlled faults, set in-process on the server object (never over HTTP, so a client under
 * test cannot reach them). Each injection applies to the next `count` requests matching
 * `endpoint` (a route name such as `POST /v1/invoices/:id/add_lines`; omitted = any endpoint), in
 * the order they were injected.
 */
export interface Inject429 {
  count: number;
  endpoint?: string;
  /** Seconds, sent as `Retry-After` when set (Stripe does not document sending it on v1). */
  retryAfterSec?: number;
  /** Sent as `Stripe-Should-Retry` when set; stripe-node 23 retries a 429 only when it is "true". */
  shouldRetry?: boolean;
  /**
   * `rate_limit`: the request/concurrency limiter (https://docs.stripe.com/rate-limits);
   * `lock_timeout`: an object lock timeout, which the same page says Stripe's client libraries do
   * retry (so it defaults to `Stripe-Should-Retry: true`).
   */
  reason?: "rate_limit" | "lock_timeout";
}

export interface Inject5xx {
  count: number;
  status: 500 | 502 | 503 | 504;
  endpoint?: string;
  shouldRetry?: boolean;
  /**
   * `before`: fails in front of the API (nothing executed, nothing saved under the idempotency key;
   * a retry with the same key runs the request). `saved`: the endpoint "began executing" and
   * failed, so the 500 is saved and replayed to every retry with the same key
   * (https://docs.stripe.com/idempotency: "Subsequent requests with the same key return the same
   * result, including 500 errors").
   */
  stage?: "before" | "saved";
}

export interface InjectLatency {
  ms: number;
  endpoint?: string;
  /** Default: every matching request until cleared. */
  count?: number;
}

export interface InjectDrop {
  count: number;
  endpoint?: string;
  /**
   * `after-commit`: the request takes effect (and its result is saved under its idempotency key),
   * then the connection is destroyed before any response byte. `before-execution`: destroyed with
   * no effect.
   */
  when: "after-commit" | "before-execution";
}

export interface RateLimit {
  /** Requests per rolling second; Stripe's defaults are 25 (sandbox, and per endpoint) or 100 (live). */
  perSecond: number;
  /** `global`: one budget for all requests; `endpoint`: one budget per route name. */
  scope: "global" | "endpoint";
}

interface Armed<T> {
  spec: T;
  remaining: number;
}

function take<T extends { endpoint?: string }>(list: Armed<T>[], endpoint: string): T | undefined {
  const i = list.findIndex(
    (a) => a.remaining > 0 && (a.spec.endpoint === undefined || a.spec.endpoint === endpoint),
  );
  if (i === -1) return undefined;
  const armed = list[i]!;
  armed.remaining--;
  if (armed.remaining === 0) list.splice(i, 1);
  return armed.spec;
}

export class Faults {
  private readonly r429: Armed<Inject429>[] = [];
  private readonly r5xx: Armed<Inject5xx>[] = [];
  private readonly lat: Armed<InjectLatency>[] = [];
  private readonly drops: Armed<InjectDrop>[] = [];
  private limit: RateLimit | null = null;
  private readonly windows = new Map<string, number[]>();

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

  /** Turns Stripe-like request-rate limiting on (or off with `null`). */
  rateLimit(limit: RateLimit | null): void {
    this.limit = limit;
    this.windows.clear();
  }

  clear(): void {
    this.r429.length = 0;
    this.r5xx.length = 0;
    this.lat.length = 0;
    this.drops.length = 0;
    this.rateLimit(null);
  }

  /** @internal consumed by the server, in its pipeline order. */
  take429(endpoint: string): Inject429 | undefined {
    return take(this.r429, endpoint);
  }

  /** @internal */
  take5xx(endpoint: string, stage: "before" | "saved"): Inject5xx | undefined {
    const i = this.r5xx.findIndex(
      (a) =>
        (a.spec.stage ?? "before") === stage &&
        (a.spec.endpoint === undefined || a.spec.endpoint === endpoint),
    );
    if (i === -1) return undefined;
    const armed = this.r5xx[i]!;
    if (--armed.remaining === 0) this.r5xx.splice(i, 1);
    return armed.spec;
  }

  /** @internal */
  takeLatency(endpoint: string): number {
    return take(this.lat, endpoint)?.ms ?? 0;
  }

  /** @internal */
  takeDrop(endpoint: string, when: InjectDrop["when"]): boolean {
    const i = this.drops.findIndex(
      (a) => a.spec.when === when && (a.spec.endpoint === undefined || a.spec.endpoint === endpoint),
    );
    if (i === -1) return false;
    const armed = this.drops[i]!;
    if (--armed.remaining === 0) this.drops.splice(i, 1);
    return true;
  }

  /**
   * @internal A rolling one-second window per budget; a request over budget is refused and not
   * counted, so a client that backs off gets through.
   */
  overRateLimit(endpoint: string, nowMs: number): boolean {
    if (this.limit === null) return false;
    const key = this.limit.scope === "global" ? "*" : endpoint;
    const w = this.windows.get(key) ?? [];
    while (w.length > 0 && w[0]! <= nowMs - 1000) w.shift();
    this.windows.set(key, w);
    if (w.length >= this.limit.perSecond) return true;
    w.push(nowMs);
    return false;
  }
}
