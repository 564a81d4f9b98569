import Stripe from "stripe";
import type { StripeConfig } from "../../config/index.js";
import { backoffMs, parseRetryAfter, type RetryPolicy } from "../../sdk/retry.js";
import { RateLimiter } from "./limiter.js";

/** A Stripe SDK client whose every HTTP request (the SDK's own retries included) passes the limiter. */
export interface StripeClient {
  stripe: Stripe;
  limiter: RateLimiter;
}

/**
 * Builds the SDK client from the config: the API base URL split into host, port and protocol
 * (the SDK takes no URL), a timeout on every request, and the rate limiter in the HTTP client so
 * that the SDK's own retries are limited too.
 *
 * `maxNetworkRetries: 2`: the SDK retries connection errors, 409 and 5xx with the idempotency
 * key we pass; it does NOT retry a plain rate-limit 429 and ignores `Retry-After` (stripe-node
 * 23 `RequestSender._shouldRetry`, test/stripe-server/README.md), which {@link callStripe} does.
 */
export function createStripeClient(config: StripeConfig, limiter?: RateLimiter): StripeClient {
  if (config.secretKey === undefined) throw new Error("TALLY_STRIPE_SECRET_KEY is not set");
  const url = new URL(config.apiBase);
  const protocol = url.protocol === "http:" ? "http" : "https";
  const lim = limiter ?? new RateLimiter(config.maxRps);
  // Stripe also limits each endpoint (25 req/s by default, https://docs.stripe.com/rate-limits):
  // in live mode (100/s global) creates alone would otherwise outrun their endpoint's share.
  const perEndpoint = new Map<string, RateLimiter>();
  const endpointLimit = Math.min(config.maxRpsPerEndpoint, config.maxRps);
  const inner = Stripe.createNodeHttpClient();
  const httpClient: Stripe.HttpClient = {
    getClientName: () => inner.getClientName(),
    makeRequest: async (host, port, path, method, ...rest) => {
      const name = endpointOf(method, path);
      let e = perEndpoint.get(name);
      if (e === undefined) perEndpoint.set(name, (e = new RateLimiter(endpointLimit)));
      // The endpoint's slot first, then the global one: a request waiting for its endpoint
      // holds no global slot that other endpoints could use.
      await e.acquire();
      await lim.acquire();
      return inner.makeRequest(host, port, path, method, ...rest);
    },
  };
  const stripe = new Stripe(config.secretKey, {
    host: url.hostname,
    port: url.port === "" ? (protocol === "http" ? 80 : 443) : Number(url.port),
    protocol,
    timeout: config.timeoutMs,
    maxNetworkRetries: 2,
    httpClient,
    telemetry: false,
    appInfo: { name: "tally" },
  });
  return { stripe, limiter: lim };
}

/** `POST /v1/invoices/:id/add_lines`: the path with object ids replaced, without the query. */
export function endpointOf(method: string, path: string): string {
  const bare = path.split("?")[0]!.replace(/\/(in|cus|il|ii|cn|evt)_[A-Za-z0-9]+/g, "/:id");
  return `${method} ${bare}`;
}

/** Our retry policy for one Stripe call (on top of the SDK's): about 2 minutes in all. */
export const stripeRetry: RetryPolicy & { maxAttempts: number } = {
  maxAttempts: 10,
  initialDelayMs: 500,
  maxDelayMs: 20_000,
  maxRetryAfterMs: 60_000,
};

/** How a failed Stripe call is handled: try the same request (same key) again, or give up. */
export type StripeFailure =
  { kind: "retry"; delayMs: number | undefined } | { kind: "fail"; code: string; message: string };

function header(err: Stripe.errors.StripeError, name: string): string | undefined {
  const h = err.headers as Record<string, string | string[] | undefined> | undefined;
  const v = h?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Decides from Stripe's error type, status and headers (never its message text) whether a
 * failed call may succeed unchanged later. `Stripe-Should-Retry` wins when present (Stripe sets it
 * for lock timeouts, and `false` when a retry cannot help); 429, 409, 5xx and connection errors are
 * retried; other 4xx are the request's fault and fail.
 */
export function classifyStripeError(err: unknown, nowMs: number): StripeFailure {
  if (!(err instanceof Stripe.errors.StripeError)) {
    return { kind: "fail", code: "internal", message: err instanceof Error ? err.message : String(err) };
  }
  const should = header(err, "stripe-should-retry");
  const retryAfter = parseRetryAfter(header(err, "retry-after"), nowMs);
  const status = err.statusCode;
  const code = err.code ?? err.rawType ?? err.type;
  if (should === "false") return { kind: "fail", code, message: err.message };
  if (
    should === "true" ||
    err instanceof Stripe.errors.StripeConnectionError ||
    status === 429 ||
    status === 409 ||
    (status !== undefined && status >= 500)
  ) {
    return { kind: "retry", delayMs: retryAfter };
  }
  return { kind: "fail", code, message: err.message };
}

/** A Stripe call that failed for good (after retries), with Stripe's code. */
export class StripeCallError extends Error {
  override name = "StripeCallError";
  constructor(
    readonly code: string,
    message: string,
    readonly status: number | undefined,
    readonly retriable: boolean,
  ) {
    super(message);
  }
}

/**
 * Runs one Stripe call, retrying what {@link classifyStripeError} says may succeed later, with
 * backoff, honouring `Retry-After` (up to a minute). The caller passes the same idempotency key
 * on every attempt (the closure captures it), so a retry of a call that did reach Stripe gets the
 * first answer back instead of acting twice.
 */
export async function callStripe<T>(
  what: string,
  fn: () => Promise<T>,
  opts: { policy?: typeof stripeRetry; onRetry?: (reason: string, delayMs: number) => void } = {},
): Promise<T> {
  const policy = opts.policy ?? stripeRetry;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err: unknown) {
      const d = classifyStripeError(err, Date.now());
      const status = err instanceof Stripe.errors.StripeError ? err.statusCode : undefined;
      if (d.kind === "fail") throw new StripeCallError(d.code, `${what}: ${d.message}`, status, false);
      if (attempt >= policy.maxAttempts) {
        const message = err instanceof Error ? err.message : String(err);
        throw new StripeCallError(
          status === 429 ? "rate_limited" : "unavailable",
          `${what}: ${message} (after ${attempt} attempts)`,
          status,
          true,
        );
      }
      const delay =
        d.delayMs !== undefined ? Math.min(d.delayMs, policy.maxRetryAfterMs) : backoffMs(policy, attempt);
      opts.onRetry?.(
        status === 429 ? "rate_limited" : status === undefined ? "connection" : String(status),
        delay,
      );
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
