import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { Clock } from "../stripe-server/ids.js";
import { badRequest, problem, XeroHttpError } from "./errors.js";
import { Faults, Limits, type LimitOptions } from "./faults.js";
import { routes, type Route } from "./routes.js";
import { State, type OrgOptions } from "./state.js";
import { stringify } from "./wire.js";

export interface StartOptions {
  /** @default 0 (a free port) */
  port?: number;
  /** @default "127.0.0.1" */
  host?: string;
  /** The custom connection's credentials. @default "tally-test-client" / "tally-test-secret" */
  clientId?: string;
  clientSecret?: string;
  /** Access-token lifetime; Xero's is 30 minutes (custom-integration FAQ). @default 1800 */
  tokenTtlSec?: number;
  /**
   * Refuse API calls without `xero-tenant-id` (standard OAuth apps). A custom connection does not
   * need it ("No, the xero-tenant-id header is not required", https://developer.xero.com/faq/custom-integration).
   * @default false
   */
  requireTenantHeader?: boolean;
  /** How long a response is kept under its Idempotency-Key (see README: not documented by Xero). @default 360_000 */
  idempotencyTtlMs?: number;
  /** Per-tenant rate limits; defaults are Xero's (60/min, 5000/day, 5 concurrent). */
  limits?: LimitOptions;
  /** Largest request body accepted (bytes). @default 3_500_000 */
  maxRequestBytes?: number;
  /** The organisation: base currency, chart of accounts. */
  org?: OrgOptions;
  /** Base clock in ms for tokens, journals and idempotency keys (`clock.advance(ms)`). @default Date.now */
  now?: () => number;
}

export interface RecordedRequest {
  seq: number;
  /** Arrival time, ms (wall clock, monotonic): what the rate-limit assertions window over. */
  at: number;
  method: string;
  path: string;
  /** Route name (`PUT /api.xro/2.0/ManualJournals`), `POST /connect/token`, or `unknown`. */
  endpoint: string;
  idempotencyKey: string | null;
  /** ManualJournals in the request body. */
  journals: number;
  /** Request body size. */
  bytes: number;
  /** Journals this request created. */
  created: number;
  status?: number;
  replayed: boolean;
  fault?: "rate_limit" | "429" | "5xx" | "drop-before" | "drop-after-commit";
  rateLimitProblem?: string;
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
  /** API calls (the token endpoint excluded: it is the identity service, not the tenant's API). */
  api(): RecordedRequest[] {
    return this.entries.filter((e) => e.endpoint !== "POST /connect/token");
  }
  of(endpoint: string): RecordedRequest[] {
    return this.entries.filter((e) => e.endpoint === endpoint);
  }
  /** Most API calls that arrived within any window of `windowMs` (a sliding window over arrivals). */
  maxInWindow(windowMs: number, filter: (e: RecordedRequest) => boolean = () => true): number {
    const at = this.api()
      .filter(filter)
      .map((e) => e.at)
      .sort((a, b) => a - b);
    let best = 0;
    for (let i = 0, j = 0; i < at.length; i++) {
      while (at[i]! - at[j]! >= windowMs) j++;
      best = Math.max(best, i - j + 1);
    }
    return best;
  }
  /** API calls per whole minute since the first one: `[n0, n1, …]`. */
  perMinute(windowMs = 60_000): number[] {
    const api = this.api();
    if (api.length === 0) return [];
    const t0 = api[0]!.at;
    const out: number[] = [];
    for (const e of api) {
      const k = Math.floor((e.at - t0) / windowMs);
      while (out.length <= k) out.push(0);
      out[k]!++;
    }
    return out;
  }
  clear(): void {
    this.entries.length = 0;
  }
}

type IdemRecord =
  | { state: "in_flight"; fingerprint: string }
  | { state: "done"; fingerprint: string; status: number; body: string; savedAt: number };

export interface XeroTestServer {
  /** Base URL of both the API (`<url>/api.xro/2.0`) and the identity service (`<url>/connect/token`). */
  url: string;
  port: number;
  host: string;
  clientId: string;
  clientSecret: string;
  state: State;
  faults: Faults;
  limits: Limits;
  requests: RequestLog;
  clock: Clock;
  /** Makes every issued access token expired now (the next API call gets a 401). */
  expireTokens(): void;
  /** Tokens issued so far. */
  tokensIssued(): number;
  /** Drops every stored idempotency key ("keys expired"). */
  expireIdempotencyKeys(): void;
  stop(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

const wallNow = () => performance.timeOrigin + performance.now();

export async function startXeroServer(opts: StartOptions = {}): Promise<XeroTestServer> {
  const host = opts.host ?? "127.0.0.1";
  const clock = new Clock(opts.now ?? Date.now);
  const state = new State(clock, opts.org);
  const faults = new Faults();
  const limits = new Limits(opts.limits);
  const requests = new RequestLog();
  const clientId = opts.clientId ?? "tally-test-client";
  const clientSecret = opts.clientSecret ?? "tally-test-secret";
  const tokenTtlSec = opts.tokenTtlSec ?? 1800;
  const idemTtlMs = opts.idempotencyTtlMs ?? 360_000;
  const maxBytes = opts.maxRequestBytes ?? 3_500_000;
  const tokens = new Map<string, number>();
  let issued = 0;
  const idem = new Map<string, IdemRecord>();
  let seq = 0;

  /**
   * OAuth 2.0 client credentials for a custom connection
   * (https://developer.xero.com/documentation/guides/oauth2/custom-connections/: `POST
   * https://identity.xero.com/connect/token`, `grant_type=client_credentials`, client id and
   * secret as HTTP Basic; "access tokens expire after 30 minutes but a new access token can be
   * requested … without user interaction", no refresh token). Errors per RFC 6749 §5.2.
   */
  const token = (req: IncomingMessage, raw: string): { status: number; body: unknown } => {
    const auth = req.headers.authorization ?? "";
    const [id, secret] = /^basic /i.test(auth)
      ? Buffer.from(auth.slice(6).trim(), "base64").toString("utf8").split(":")
      : [undefined, undefined];
    const form = new URLSearchParams(raw);
    if (form.get("grant_type") !== "client_credentials")
      return { status: 400, body: { error: "unsupported_grant_type" } };
    if (id !== clientId || secret !== clientSecret) return { status: 400, body: { error: "invalid_client" } };
    const access = randomBytes(24).toString("base64url");
    tokens.set(access, clock.now() + tokenTtlSec * 1000);
    issued++;
    return {
      status: 200,
      body: {
        access_token: access,
        expires_in: tokenTtlSec,
        token_type: "Bearer",
        scope: form.get("scope") ?? "accounting.transactions accounting.settings.read",
      },
    };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = (req.method ?? "GET").toUpperCase();
    const url = new URL(req.url ?? "/", "http://xero.test");
    const keyHeader = req.headers["idempotency-key"];
    const idempotencyKey = typeof keyHeader === "string" ? keyHeader : null;
    const entry: RecordedRequest = {
      seq: ++seq,
      at: wallNow(),
      method,
      path: url.pathname,
      endpoint: "unknown",
      idempotencyKey,
      journals: 0,
      bytes: 0,
      created: 0,
      replayed: false,
    };
    requests.add(entry);
    const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" };
    const send = (status: number, body: string, extra: Record<string, string> = {}) => {
      entry.status = status;
      res.writeHead(status, { ...headers, ...extra, "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    const destroy = () => req.socket.destroy();
    let tenant: string | null = null;

    try {
      const raw = await readBody(req);
      entry.bytes = raw.length;
      if (method === "POST" && url.pathname === "/connect/token") {
        entry.endpoint = "POST /connect/token";
        const r = token(req, raw.toString("utf8"));
        send(r.status, JSON.stringify(r.body));
        return;
      }
      const match = matchRoute(method, url.pathname);
      if (match === null) throw problem(404, "Not Found", `No route for ${method} ${url.pathname}`);
      const { route, pathParams } = match;
      entry.endpoint = route.name;

      // Authentication first: an unauthenticated call is refused before any limit or key.
      const auth = req.headers.authorization ?? "";
      const bearer = /^bearer /i.test(auth) ? auth.slice(7).trim() : "";
      const exp = tokens.get(bearer);
      if (bearer === "" || exp === undefined || exp <= clock.now()) {
        // RFC 6750 §3: WWW-Authenticate with error="invalid_token" for an expired/unknown token.
        // ASSUMED body: Xero's gateway problem document with Detail "TokenExpired: …".
        throw problem(
          401,
          "Unauthorized",
          exp !== undefined
            ? `TokenExpired: token expired at ${new Date(exp).toISOString()}`
            : "AuthenticationUnsuccessful",
          { "www-authenticate": 'Bearer error="invalid_token"' },
        );
      }
      const tenantHeader = req.headers["xero-tenant-id"];
      if (
        typeof tenantHeader === "string" ? tenantHeader !== state.tenantId : opts.requireTenantHeader === true
      ) {
        throw problem(403, "Forbidden", "AuthenticationUnsuccessful");
      }
      tenant = state.tenantId;

      // https://developer.xero.com/faq/limits: "Each API response you receive will include the
      // X-DayLimit-Remaining, X-MinLimit-Remaining and X-AppMinLimit-Remaining headers"; 429 when a
      // limit is exceeded, with `X-Rate-Limit-Problem` naming it (values `minute`, `day`,
      // `concurrent` as seen by Xero's SDK users, e.g. xero-python's XeroTooManyInMinuteError on
      // "minute") and `Retry-After` (seconds) for the minute and day limits.
      const admitted = limits.admit(tenant, wallNow());
      const rem = limits.remaining(tenant, wallNow());
      headers["x-minlimit-remaining"] = String(rem.minute);
      headers["x-daylimit-remaining"] = String(rem.day);
      headers["x-appminlimit-remaining"] = String(limits.appPerMinute - 1);
      if (!admitted.ok) {
        entry.fault = "rate_limit";
        entry.rateLimitProblem = admitted.problem;
        throw rateLimited(admitted.problem, admitted.retryAfterSec);
      }
      const f429 = faults.take429(route.name);
      if (f429) {
        entry.fault = "429";
        entry.rateLimitProblem = f429.problem ?? "minute";
        throw rateLimited(f429.problem ?? "minute", f429.retryAfterSec ?? 1);
      }
      limits.enter(tenant);
      try {
        await execute(route, pathParams, raw, url, req, entry, send, destroy, idempotencyKey, tenant);
      } finally {
        limits.leave(tenant);
      }
    } catch (e) {
      if (e instanceof XeroHttpError) {
        send(e.status, e.body(), e.headers);
        return;
      }
      send(
        500,
        JSON.stringify({
          Type: null,
          Title: "Internal Server Error",
          Status: 500,
          Detail: `xero-server bug: ${String(e)}`,
        }),
      );
    }
  };

  const execute = async (
    route: Route,
    pathParams: string[],
    raw: Buffer,
    url: URL,
    req: IncomingMessage,
    entry: RecordedRequest,
    send: (status: number, body: string, extra?: Record<string, string>) => void,
    destroy: () => void,
    idempotencyKey: string | null,
    tenant: string,
  ): Promise<void> => {
    const f5 = faults.take5xx(route.name, "before");
    if (f5) {
      entry.fault = "5xx";
      throw serverError(f5.status);
    }
    if (faults.takeDrop(route.name, "before-execution")) {
      entry.fault = "drop-before";
      destroy();
      return;
    }
    const writes = route.method === "PUT" || route.method === "POST";
    if (writes && raw.length > maxBytes) {
      // "A single POST to the API has a size limit of 3.5MB" (Xero's request-size note, quoted in
      // paulschwarz/kohana-xero README). ASSUMED status: 413.
      throw problem(
        413,
        "Request Entity Too Large",
        `The request body is ${raw.length} bytes; the limit is ${maxBytes}.`,
      );
    }
    let body: unknown = null;
    if (writes) {
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        throw badRequest("The request body is not valid JSON.");
      }
      const list = (body as { ManualJournals?: unknown } | null)?.ManualJournals;
      entry.journals = Array.isArray(list) ? list.length : 0;
    }

    // Idempotency-Key (xero_accounting.yaml: "This allows you to safely retry requests without the
    // risk of duplicate processing. 128 character max."), on writes only. Keys are scoped to the
    // tenant. A repeated key with the same request gets the first response back; with a different
    // request a 400 (ASSUMED wording, from integration guides); a key whose request is still
    // executing gets a 409 (ASSUMED). How long keys live is not in the yaml; see README.
    const useIdem = writes && idempotencyKey !== null;
    const storeKey = `${tenant}\u0000${idempotencyKey ?? ""}`;
    const fingerprint = createHash("sha256")
      .update(`${route.method} ${url.pathname} ${url.searchParams.toString()}\u0000`)
      .update(raw)
      .digest("hex");
    if (useIdem) {
      if (idempotencyKey.length > 128)
        throw badRequest("The Idempotency-Key must be 128 characters or fewer.");
      let rec = idem.get(storeKey);
      if (rec?.state === "done" && clock.now() - rec.savedAt >= idemTtlMs) {
        idem.delete(storeKey);
        rec = undefined;
      }
      if (rec?.state === "in_flight") {
        throw problem(409, "Conflict", `A request with Idempotency-Key ${idempotencyKey} is in progress.`);
      }
      if (rec?.state === "done") {
        if (rec.fingerprint !== fingerprint) {
          throw badRequest(`Idempotency Key ${idempotencyKey} is used with a different request.`);
        }
        entry.replayed = true;
        if (faults.takeDrop(route.name, "after-commit")) {
          entry.fault = "drop-after-commit";
          destroy();
          return;
        }
        send(rec.status, rec.body);
        return;
      }
      idem.set(storeKey, { state: "in_flight", fingerprint });
    }
    const save = (status: number, b: string) => {
      if (useIdem) idem.set(storeKey, { state: "done", fingerprint, status, body: b, savedAt: clock.now() });
    };
    try {
      const delay = faults.takeLatency(route.name);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      const result = route.handler({
        query: url.searchParams,
        headers: req.headers,
        body,
        pathParams,
        state,
        clock,
        idempotencyKey,
      });
      entry.created = result.created ?? 0;
      const text = stringify(result.body);
      save(result.status, text);
      const after5 = faults.take5xx(route.name, "after-commit");
      if (after5) {
        // Committed and saved under the key, but the client sees a gateway error.
        entry.fault = "5xx";
        throw serverError(after5.status);
      }
      if (faults.takeDrop(route.name, "after-commit")) {
        entry.fault = "drop-after-commit";
        destroy();
        return;
      }
      send(result.status, text);
    } catch (e) {
      if (e instanceof XeroHttpError && e.phase === "execution") save(e.status, e.body());
      else if (useIdem && idem.get(storeKey)?.state === "in_flight") idem.delete(storeKey);
      throw e;
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
    clientId,
    clientSecret,
    state,
    faults,
    limits,
    requests,
    clock,
    expireTokens: () => {
      for (const k of tokens.keys()) tokens.set(k, clock.now() - 1);
    },
    tokensIssued: () => issued,
    expireIdempotencyKeys: () => idem.clear(),
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

function rateLimited(problemName: "minute" | "day" | "concurrent", retryAfterSec?: number): XeroHttpError {
  const h: Record<string, string> = { "x-rate-limit-problem": problemName };
  if (retryAfterSec !== undefined && problemName !== "concurrent") h["retry-after"] = String(retryAfterSec);
  return problem(429, "Too Many Requests", `Rate limit exceeded: ${problemName}`, h);
}

function serverError(status: number): XeroHttpError {
  return problem(
    status,
    status === 503 ? "Service Unavailable" : "Internal Server Error",
    "injected by the test",
  );
}
