import { Agent, request } from "undici";
import type { XeroConfig } from "../../config/index.js";
import type { Logger } from "../../observability/index.js";
import { backoffMs, parseRetryAfter, type RetryPolicy } from "../../sdk/retry.js";
import { CallBudgetExhausted, type CallLimiter } from "./limiter.js";
import { xeroCalls } from "./metrics.js";

/**
 * A thin client of Xero's Accounting API on undici: a timeout on every request (token requests
 * included), every API call through the shared {@link CallLimiter} and a cap on calls in
 * progress, the custom connection's access token refreshed before it expires, and Xero's 429s
 * (which mean "not executed") waited out with `Retry-After` and retried.
 *
 * The answer is a union decided by status and headers, never by message text: the caller (the
 * pusher) records each answer before acting on it.
 */
export type XeroAnswer =
  | { kind: "ok"; status: number; body: unknown }
  /** A 4xx other than 401/409/429: the request itself was refused (validation, size, permissions). */
  | { kind: "refused"; status: number; body: unknown; message: string }
  /** 5xx, 409, a dropped connection or a timeout: the outcome is unknown (it may have been committed). */
  | { kind: "unknown"; status: number | null; message: string; retryAfterMs: number | undefined };

export class XeroAuthError extends Error {
  override name = "XeroAuthError";
}

interface Token {
  value: string;
  expiresAt: number;
}

/** Retries of a 429 (Xero did not execute the call) before giving up on this call. */
const MAX_429_RETRIES = 8;

export class XeroClient {
  private token: Token | null = null;
  private refreshing: Promise<Token> | null = null;
  private inProgress = 0;
  private readonly waiters: (() => void)[] = [];
  private readonly agent: Agent;
  private tokens = 0;

  constructor(
    private readonly config: XeroConfig,
    private readonly limiter: CallLimiter,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    if (config.clientId === undefined || config.clientSecret === undefined) {
      throw new Error("TALLY_XERO_CLIENT_ID and TALLY_XERO_CLIENT_SECRET must be set");
    }
    this.agent = new Agent({
      connections: Math.max(config.concurrency, 1) + 1,
      headersTimeout: config.timeoutMs,
      bodyTimeout: config.timeoutMs,
      connectTimeout: Math.min(config.timeoutMs, 10_000),
    });
  }

  /** Access tokens obtained so far (tests: a refresh happened). */
  get tokensObtained(): number {
    return this.tokens;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** `GET /api.xro/2.0/<path>`. */
  get(
    path: string,
    query: Record<string, string> = {},
    headers: Record<string, string> = {},
  ): Promise<XeroAnswer> {
    return this.call("GET", path, { query, headers });
  }

  /**
   * `PUT /api.xro/2.0/ManualJournals?summarizeErrors=false` with the body as given (exact JSON
   * text: amounts are decimal literals, never re-serialized through floats) and the key.
   */
  createManualJournals(body: string, idempotencyKey: string): Promise<XeroAnswer> {
    return this.call("PUT", "ManualJournals", {
      query: { summarizeErrors: "false" },
      headers: { "idempotency-key": idempotencyKey, "content-type": "application/json" },
      body,
    });
  }

  private async call(
    method: "GET" | "PUT",
    path: string,
    opts: { query?: Record<string, string>; headers?: Record<string, string>; body?: string },
  ): Promise<XeroAnswer> {
    const url = new URL(`${this.config.apiBase.replace(/\/$/, "")}/api.xro/2.0/${path}`);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    let authRetried = false;
    for (let attempt = 1; ; attempt++) {
      const token = await this.accessToken();
      await this.enter();
      let res;
      try {
        // The limiter's grant is taken inside the concurrency slot, right before the call starts,
        // so the recorded start times are the real ones. Waiting out the minute budget is normal;
        // a longer wait means the day's budget is spent: CallBudgetExhausted ends the run.
        await this.limiter.acquire(2 * this.config.minuteWindowMs + 5_000);
        res = await request(url, {
          method,
          dispatcher: this.agent,
          headers: {
            authorization: `Bearer ${token.value}`,
            accept: "application/json",
            ...(this.config.tenantId !== undefined ? { "xero-tenant-id": this.config.tenantId } : {}),
            ...opts.headers,
          },
          ...(opts.body !== undefined ? { body: opts.body } : {}),
          signal: AbortSignal.timeout(this.config.timeoutMs),
        });
      } catch (err: unknown) {
        this.leave();
        if (err instanceof CallBudgetExhausted) throw err;
        xeroCalls.inc({ method, outcome: "network" });
        return { kind: "unknown", status: null, message: errorText(err), retryAfterMs: undefined };
      }
      let text: string;
      try {
        text = await res.body.text();
      } catch (err: unknown) {
        xeroCalls.inc({ method, outcome: "network" });
        return { kind: "unknown", status: res.statusCode, message: errorText(err), retryAfterMs: undefined };
      } finally {
        this.leave();
      }
      const status = res.statusCode;
      const header = (n: string) => {
        const v = res.headers[n];
        return Array.isArray(v) ? v[0] : v;
      };
      const body = parseJson(text);
      if (status === 401 && !authRetried) {
        // The token was refused (expired early, revoked): one fresh token, then the same call.
        xeroCalls.inc({ method, outcome: "401" });
        authRetried = true;
        this.token = null;
        continue;
      }
      if (status === 429) {
        // Rate limits are checked before anything executes: the call had no effect and is sent
        // again as is (same Idempotency-Key). `concurrent` carries no Retry-After.
        xeroCalls.inc({ method, outcome: "429" });
        const problem = header("x-rate-limit-problem") ?? "unknown";
        const wait = parseRetryAfter(header("retry-after"), this.now()) ?? backoffMs(retry429, attempt);
        if (attempt > MAX_429_RETRIES || problem === "day") {
          return { kind: "unknown", status, message: `Xero rate limit (${problem})`, retryAfterMs: wait };
        }
        this.log.warn({ problem, waitMs: wait, path }, "xero: 429, waiting");
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      if (status >= 200 && status < 300) {
        xeroCalls.inc({ method, outcome: "ok" });
        return { kind: "ok", status, body };
      }
      // 409: a request under the same Idempotency-Key is still executing (a resend after a crash
      // that met the original): its outcome is unknown until it finishes, so resend later under
      // the same key; never look up or re-create meanwhile (the original may still commit).
      if (status >= 500 || status === 408 || status === 409) {
        xeroCalls.inc({ method, outcome: "5xx" });
        return {
          kind: "unknown",
          status,
          message: `Xero answered ${status}`,
          retryAfterMs: parseRetryAfter(header("retry-after"), this.now()),
        };
      }
      if (status === 401)
        throw new XeroAuthError(`Xero refused the access token twice: ${describe(body, text)}`);
      xeroCalls.inc({ method, outcome: "refused" });
      return { kind: "refused", status, body, message: describe(body, text) };
    }
  }

  /** The current token, refreshed when it expires within the margin; one refresh at a time. */
  private async accessToken(): Promise<Token> {
    const t = this.token;
    if (t !== null && t.expiresAt - this.config.tokenRefreshMarginMs > this.now()) return t;
    this.refreshing ??= this.fetchToken().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /**
   * OAuth 2.0 client credentials against Xero's identity service (custom connections:
   * https://developer.xero.com/faq/custom-integration: "An access token can be requested using
   * only the client_id and client_secret"; it expires after 30 minutes, no refresh token).
   */
  private async fetchToken(): Promise<Token> {
    const url = `${this.config.identityUrl.replace(/\/$/, "")}/connect/token`;
    const form = new URLSearchParams({ grant_type: "client_credentials" });
    if (this.config.scopes !== undefined) form.set("scope", this.config.scopes);
    const basic = Buffer.from(`${this.config.clientId}:${this.config.clientSecret}`).toString("base64");
    for (let attempt = 1; ; attempt++) {
      const started = this.now();
      try {
        const res = await request(url, {
          method: "POST",
          dispatcher: this.agent,
          headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
          body: form.toString(),
          signal: AbortSignal.timeout(this.config.timeoutMs),
        });
        const text = await res.body.text();
        const body = parseJson(text) as {
          access_token?: unknown;
          expires_in?: unknown;
          error?: unknown;
        } | null;
        if (res.statusCode === 200 && typeof body?.access_token === "string") {
          const ttl = typeof body.expires_in === "number" ? body.expires_in : 1800;
          this.tokens++;
          // From the request's start: the token's clock started no earlier than that.
          this.token = { value: body.access_token, expiresAt: started + ttl * 1000 };
          return this.token;
        }
        if (res.statusCode >= 400 && res.statusCode < 500) {
          throw new XeroAuthError(`Xero token request refused (${res.statusCode}): ${describe(body, text)}`);
        }
      } catch (err: unknown) {
        if (err instanceof XeroAuthError || attempt >= 5) throw err;
      }
      await new Promise((r) => setTimeout(r, backoffMs(retry429, attempt)));
    }
  }

  private async enter(): Promise<void> {
    while (this.inProgress >= this.config.concurrency) await new Promise<void>((r) => this.waiters.push(r));
    this.inProgress++;
  }

  private leave(): void {
    this.inProgress--;
    this.waiters.shift()?.();
  }
}

const retry429: RetryPolicy = {
  maxAttempts: MAX_429_RETRIES,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  maxRetryAfterMs: 120_000,
};

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** A short human description of an error body (logs and records only; never decided upon). */
function describe(body: unknown, text: string): string {
  if (typeof body === "object" && body !== null) {
    const b = body as Record<string, unknown>;
    const parts = [b.Message, b.Detail, b.Title, b.error].filter((v): v is string => typeof v === "string");
    if (parts.length > 0) return parts.join(": ");
  }
  return text.slice(0, 300);
}
