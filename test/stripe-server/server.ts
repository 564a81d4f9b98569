import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { StripeHttpError, invalid } from "./errors.js";
import { Faults } from "./faults.js";
import { Clock, newId } from "./ids.js";
import { FormParseError, canonical, parseForm, type FormObject } from "./form.js";
import { routes, type Route } from "./routes.js";
import { State } from "./state.js";

export interface StartOptions {
  /** @default 0 (a free port) */
  port?: number;
  /** @default "127.0.0.1" */
  host?: string;
  /** Secret keys accepted; @default any key starting with `sk_test_` or `rk_test_`. */
  apiKeys?: string[];
  /** Stripe's documented per-invoice item limit; accounts can have it raised. @default 250 */
  maxLinesPerInvoice?: number;
  /** Delay before a created or updated invoice shows in search ("under 1 minute"). @default 0 */
  searchLagMs?: number;
  /** Idempotency keys are pruned once "at least 24 hours old". @default 86_400_000 */
  idempotencyTtlMs?: number;
  /** Currency of invoices whose customer has none yet. @default "usd" */
  defaultCurrency?: string;
  /** Base clock in ms (advance it with `clock.advance`). @default Date.now */
  now?: () => number;
}

export interface RecordedRequest {
  seq: number;
  method: string;
  path: string;
  /** Route name, e.g. `POST /v1/invoices/:id/add_lines`, or `unknown`. */
  endpoint: string;
  idempotencyKey: string | null;
  params: FormObject;
  /** Undefined when the connection was destroyed instead of answered. */
  status?: number;
  /** Answered from the idempotency store without executing. */
  replayed: boolean;
  /** Which fault (if any) produced the answer. */
  fault?: "rate_limit" | "429" | "5xx" | "drop-before" | "crash-after-commit";
  at: number;
}

export class RequestLog {
  private readonly entries: RecordedRequest[] = [];
  /** @internal */
  add(e: RecordedRequest): void {
    this.entries.push(e);
  }
  all(): readonly RecordedRequest[] {
    return this.entries;
  }
  /** Requests to one endpoint (route name), or all. */
  of(endpoint?: string): RecordedRequest[] {
    return endpoint === undefined ? [...this.entries] : this.entries.filter((e) => e.endpoint === endpoint);
  }
  count(endpoint?: string): number {
    return this.of(endpoint).length;
  }
  countsByEndpoint(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.entries) out[e.endpoint] = (out[e.endpoint] ?? 0) + 1;
    return out;
  }
  clear(): void {
    this.entries.length = 0;
  }
}

type IdemRecord =
  | { state: "in_flight"; fingerprint: string; apiKey: string }
  | {
      state: "done";
      fingerprint: string;
      status: number;
      body: string;
      savedAt: number;
    };

export interface StripeTestServer {
  url: string;
  port: number;
  host: string;
  state: State;
  faults: Faults;
  requests: RequestLog;
  clock: Clock;
  stop(): Promise<void>;
}

const STRIPE_VERSION = "2026-10-28.endive";

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/**
 * https://docs.stripe.com/api/authentication: the secret key as HTTP Basic username or as a Bearer
 * token (stripe-node sends `Authorization: Bearer <key>`). Unauthenticated requests are refused
 * before anything else runs, and never saved under an idempotency key
 * (https://docs.stripe.com/error-handling: "The same goes for a 401 that omitted an API key").
 */
function authenticate(req: IncomingMessage, accepted: (key: string) => boolean): string {
  const header = req.headers.authorization ?? "";
  let key = "";
  if (/^bearer /i.test(header)) key = header.slice(7).trim();
  else if (/^basic /i.test(header)) {
    key = Buffer.from(header.slice(6).trim(), "base64").toString("utf8").split(":")[0] ?? "";
  }
  if (key === "") {
    throw new StripeHttpError(
      401,
      "invalid_request_error",
      "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
    );
  }
  if (!accepted(key)) {
    throw new StripeHttpError(
      401,
      "invalid_request_error",
      `Invalid API Key provided: ${key.slice(0, 8)}${"*".repeat(Math.max(0, key.length - 12))}${key.slice(-4)}`,
    );
  }
  return key;
}

export async function startStripeServer(opts: StartOptions = {}): Promise<StripeTestServer> {
  const host = opts.host ?? "127.0.0.1";
  const clock = new Clock(opts.now ?? Date.now);
  const state = new State({
    clock,
    maxLinesPerInvoice: opts.maxLinesPerInvoice ?? 250,
    searchLagMs: opts.searchLagMs ?? 0,
    defaultCurrency: opts.defaultCurrency ?? "usd",
  });
  const faults = new Faults();
  const requests = new RequestLog();
  const ttlMs = opts.idempotencyTtlMs ?? 86_400_000;
  const idem = new Map<string, IdemRecord>();
  const accepted = (key: string) => (opts.apiKeys ? opts.apiKeys.includes(key) : /^(sk|rk)_test_/.test(key));
  let seq = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = (req.method ?? "GET").toUpperCase();
    const url = new URL(req.url ?? "/", "http://stripe.test");
    const requestId = newId("req");
    const idempotencyKeyHeader = req.headers["idempotency-key"];
    const idempotencyKey = typeof idempotencyKeyHeader === "string" ? idempotencyKeyHeader : null;
    const entry: RecordedRequest = {
      seq: ++seq,
      method,
      path: url.pathname,
      endpoint: "unknown",
      idempotencyKey,
      params: {},
      replayed: false,
      at: clock.now(),
    };
    requests.add(entry);

    const headers: Record<string, string> = {
      "content-type": "application/json",
      "request-id": requestId,
      "stripe-version": (req.headers["stripe-version"] as string | undefined) ?? STRIPE_VERSION,
    };
    if (idempotencyKey !== null) headers["idempotency-key"] = idempotencyKey;

    const send = (status: number, body: string, extra: Record<string, string> = {}) => {
      entry.status = status;
      res.writeHead(status, { ...headers, ...extra, "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    const sendError = (err: StripeHttpError) =>
      send(err.status, JSON.stringify(err.body(), null, 2), err.headers);
    const destroy = () => {
      // NOTE: destroying the socket (not the response) is what a crashed server looks like to the
      // client: ECONNRESET / "socket hang up", no status line.
      req.socket.destroy();
    };

    try {
      const rawBody = await readBody(req);
      try {
        entry.params = method === "POST" ? parseForm(rawBody) : parseForm(url.searchParams.toString());
      } catch (e) {
        if (e instanceof FormParseError) throw invalid(e.message, e.param);
        throw e;
      }
      const apiKey = authenticate(req, accepted);

      const match = matchRoute(method, url.pathname);
      if (match === null) {
        throw new StripeHttpError(
          404,
          "invalid_request_error",
          `Unrecognized request URL (${method}: ${url.pathname}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
        );
      }
      const { route, pathParams } = match;
      entry.endpoint = route.name;

      // Limiters run before the idempotency layer (https://docs.stripe.com/error-handling: "a
      // request that's rate limited with a 429 can produce a different result with the same
      // idempotency key because rate limiters run before the API's idempotency layer").
      if (faults.overRateLimit(route.name, performance.now())) {
        entry.fault = "rate_limit";
        throw rateLimited({});
      }
      const f429 = faults.take429(route.name);
      if (f429) {
        entry.fault = "429";
        throw rateLimited(f429);
      }
      const f5xx = faults.take5xx(route.name, "before");
      if (f5xx) {
        entry.fault = "5xx";
        throw serverError(f5xx);
      }
      if (faults.takeDrop(route.name, "before-execution")) {
        entry.fault = "drop-before";
        destroy();
        return;
      }

      // https://docs.stripe.com/idempotency: only POSTs; "Sending idempotency keys in GET and
      // DELETE requests has no effect". Keys are per account (here: per secret key).
      const useIdem = method === "POST" && idempotencyKey !== null;
      const storeKey = `${apiKey}\u0000${idempotencyKey ?? ""}`;
      const fingerprint = `${method} ${url.pathname} ${canonical(entry.params)}`;
      if (useIdem) {
        if (idempotencyKey.length > 255) {
          throw invalid("Idempotency-Key must be at most 255 characters long.", undefined);
        }
        let rec = idem.get(storeKey);
        if (rec?.state === "done" && clock.now() - rec.savedAt >= ttlMs) {
          // "We generate a new request if a key is reused after the original is pruned."
          idem.delete(storeKey);
          rec = undefined;
        }
        if (rec?.state === "in_flight") {
          // Status 409 "The request conflicts with another request (perhaps due to using the same
          // idempotent key)" (https://docs.stripe.com/api/errors). The message is the one quoted in
          // stripe/stripe-ruby#431; code `idempotency_key_in_use` is in stripe@23.1.0's error-code
          // enum; the `type` is ASSUMED. Not saved: "the request conflicts with another request
          // that's executing concurrently" leaves nothing stored.
          throw new StripeHttpError(
            409,
            "idempotency_error",
            `There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): ${idempotencyKey}. Please try again later.`,
            { code: "idempotency_key_in_use" },
          );
        }
        if (rec?.state === "done") {
          if (rec.fingerprint !== fingerprint) {
            // "The idempotency layer compares incoming parameters to those of the original request
            // and errors if they're not the same" (https://docs.stripe.com/idempotency);
            // idempotency_error: "an Idempotency-Key is re-used on a request that does not match
            // the first request's API endpoint and parameters" (https://docs.stripe.com/api/errors).
            throw new StripeHttpError(
              400,
              "idempotency_error",
              `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`,
            );
          }
          entry.replayed = true;
          // A replayed answer can be lost on the wire like any other.
          if (faults.takeDrop(route.name, "after-commit")) {
            entry.fault = "crash-after-commit";
            destroy();
            return;
          }
          // `Idempotent-Replayed: true` is not in the Stripe pages read; it is the header Stripe's
          // API is reported to send on replays (GHSA-8mhj-rffc-rcvw relies on it). Clients must
          // not depend on it.
          send(rec.status, rec.body, { "idempotent-replayed": "true" });
          return;
        }
        idem.set(storeKey, { state: "in_flight", fingerprint, apiKey });
      }

      const save = (status: number, body: string) => {
        if (useIdem) idem.set(storeKey, { state: "done", fingerprint, status, body, savedAt: clock.now() });
      };
      try {
        const delay = faults.takeLatency(route.name);
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));

        const saved5xx = faults.take5xx(route.name, "saved");
        if (saved5xx) {
          entry.fault = "5xx";
          const err = serverError(saved5xx);
          const body = JSON.stringify(err.body(), null, 2);
          save(err.status, body);
          send(err.status, body, err.headers);
          return;
        }

        const result = route.handler({
          params: entry.params,
          pathParams,
          state,
          requestId,
          idempotencyKey,
          apiVersion: headers["stripe-version"]!,
        });
        const body = JSON.stringify(result.body, null, 2);
        save(result.status, body);
        if (faults.takeDrop(route.name, "after-commit")) {
          entry.fault = "crash-after-commit";
          destroy();
          return;
        }
        send(result.status, body);
      } catch (e) {
        if (e instanceof StripeHttpError && e.phase === "execution") {
          save(e.status, JSON.stringify(e.body(), null, 2));
        } else if (useIdem) {
          idem.delete(storeKey);
        }
        throw e;
      }
    } catch (e) {
      if (e instanceof StripeHttpError) {
        sendError(e);
        return;
      }
      const err = new StripeHttpError(500, "api_error", `stripe-server bug: ${String(e)}`);
      sendError(err);
    }
  };

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    port,
    host,
    state,
    faults,
    requests,
    clock,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function matchRoute(method: string, path: string): { route: Route; pathParams: string[] } | null {
  for (const route of routes) {
    if (route.method !== method) continue;
    const m = route.pattern.exec(path);
    if (m) return { route, pathParams: m.slice(1).map((s) => decodeURIComponent(s)) };
  }
  return null;
}

/**
 * https://docs.stripe.com/rate-limits: limited requests get HTTP 429; "unlike rate limiting errors,
 * the automatic retry mechanisms built into Stripe's client libraries will retry 429s caused by lock
 * timeouts" (quoted in beam-community/stripity-stripe#686). stripe-node 23 retries a 429 only on
 * `Stripe-Should-Retry: true` (RequestSender.js#_shouldRetry), so a lock timeout carries it
 * (inference). Body: since 2015-09-08 a rate-limited request "no longer return[s] a rate_limit error
 * code" (https://docs.stripe.com/changelog/2015-09-08/rate-limited-requests-return-429-no-rate-limit);
 * lock_timeout's body is the one quoted in stripe/stripe-node#2056.
 */
function rateLimited(f: {
  retryAfterSec?: number;
  shouldRetry?: boolean;
  reason?: "rate_limit" | "lock_timeout";
}): StripeHttpError {
  const headers: Record<string, string> = {};
  if (f.retryAfterSec !== undefined) headers["retry-after"] = String(f.retryAfterSec);
  const lock = f.reason === "lock_timeout";
  const shouldRetry = f.shouldRetry ?? (lock ? true : undefined);
  if (shouldRetry !== undefined) headers["stripe-should-retry"] = String(shouldRetry);
  return lock
    ? new StripeHttpError(
        429,
        "invalid_request_error",
        "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.",
        { code: "lock_timeout", doc_url: "https://stripe.com/docs/error-codes/lock-timeout" },
        "validation",
        headers,
      )
    : new StripeHttpError(
        429,
        "invalid_request_error",
        "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
        { doc_url: "https://docs.stripe.com/rate-limits" },
        "validation",
        headers,
      );
}

/** 5xx: "Something went wrong on Stripe's end" (https://docs.stripe.com/api/errors), type api_error. */
function serverError(f: { status: number; shouldRetry?: boolean }): StripeHttpError {
  const headers: Record<string, string> = {};
  if (f.shouldRetry !== undefined) headers["stripe-should-retry"] = String(f.shouldRetry);
  return new StripeHttpError(
    f.status,
    "api_error",
    "Something went wrong on Stripe's end. (injected by the test)",
    {},
    "execution",
    headers,
  );
}
