import { z } from "zod";
import { isValidZone } from "../usage/windows.js";

const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const bool = (def: boolean) =>
  z
    .enum(["true", "false", "1", "0"])
    .default(def ? "true" : "false")
    .transform((v) => v === "true" || v === "1");

/** Identifier-safe name used to derive NATS stream, subject, consumer and KV names. */
const natsPrefix = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,31}$/, "must match ^[a-z][a-z0-9_]{0,31}$")
  .default("tally");

/** ClickHouse database name; validated strictly because identifiers cannot be escaped as values. */
const dbName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, "must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$")
  .default("tally");

/**
 * Every environment variable Tally reads, with a default for each tunable.
 * Parsed once in the CLI entry point ({@link loadConfig}); everything below receives the typed object.
 */
export const envSchema = z.object({
  TALLY_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  TALLY_HTTP_HOST: z.string().default("0.0.0.0"),
  TALLY_HTTP_PORT: int(8787, 0).pipe(z.number().max(65535)),
  /** Edge processes sharing the port (node:cluster); `tally edge --workers` overrides it. */
  TALLY_EDGE_WORKERS: int(1, 1).pipe(z.number().max(64)),
  TALLY_DATA_DIR: z.string().default(".tally"),
  TALLY_DEV_KEY: z
    .string()
    .min(16, "must be at least 16 characters")
    .default("tally_dev_admin_key_change_me"),

  TALLY_NATS_URL: z.string().default("nats://127.0.0.1:4222"),
  TALLY_NATS_PREFIX: natsPrefix,
  /** Number of bus partitions. Fixed for the life of a stream: event ids are hashed onto partitions. */
  TALLY_PARTITIONS: int(4, 1).pipe(z.number().max(64)),
  TALLY_STREAM_REPLICAS: int(1, 1).pipe(z.number().max(5)),
  TALLY_STREAM_MAX_BYTES: int(10 * 1024 ** 3, 1024 * 1024),

  TALLY_CLICKHOUSE_URL: z.url().default("http://127.0.0.1:8123"),
  TALLY_CLICKHOUSE_USER: z.string().default("default"),
  TALLY_CLICKHOUSE_PASSWORD: z.string().default(""),
  TALLY_CLICKHOUSE_DATABASE: dbName,
  TALLY_CLICKHOUSE_TIMEOUT_MS: int(30_000, 100),
  /**
   * ClickHouse user for reads (usage API, live streams, portal, event debugger): give it a
   * profile with limits (deploy/clickhouse/users.d/tally.xml) so no read load can starve the
   * sink's inserts and ledger lookups. Unset: the same user as the sink.
   */
  TALLY_CLICKHOUSE_READ_USER: z.string().min(1).optional(),
  /** Password of TALLY_CLICKHOUSE_READ_USER. Unset: TALLY_CLICKHOUSE_PASSWORD when the read user is the same user, else empty. */
  TALLY_CLICKHOUSE_READ_PASSWORD: z.string().optional(),
  /** Connections the edge opens to ClickHouse for reads (requests beyond wait for one). */
  TALLY_CLICKHOUSE_READ_CONNECTIONS: int(8, 1),

  /** Oldest accepted event time, in days before now. Also the minimum dedup horizon. */
  TALLY_BACKFILL_DAYS: int(35, 1).pipe(z.number().max(3650)),
  /** How long event ids are remembered for dedup; never less than the backfill horizon. */
  TALLY_DEDUP_RETENTION_DAYS: int(40, 35),
  TALLY_MAX_BODY_BYTES: int(5 * 1024 * 1024, 1024),
  TALLY_MAX_EVENTS_PER_REQUEST: int(10_000, 1),

  /** Group commit: flush a partition's pending events once this many bytes are queued. */
  TALLY_PUBLISH_MAX_BYTES: int(512 * 1024, 1024).pipe(z.number().max(8 * 1024 * 1024)),
  /** Group commit: at most this many JetStream publishes in flight per partition. */
  TALLY_PUBLISH_MAX_INFLIGHT: int(4, 1),
  TALLY_PUBLISH_TIMEOUT_MS: int(10_000, 100),
  /** Edge backpressure: requests wait once this many bytes are queued for publish. */
  TALLY_EDGE_MAX_PENDING_BYTES: int(64 * 1024 * 1024, 1024 * 1024),

  TALLY_SINK_BATCH_ROWS: int(20_000, 1),
  /** Flush a partition at least this often (ms). Longer: fewer, larger ClickHouse inserts (less CPU per event), later countable. */
  TALLY_SINK_LINGER_MS: int(500, 1),
  TALLY_SINK_MAX_INFLIGHT: int(4, 1),
  TALLY_SINK_ACK_WAIT_MS: int(30_000, 1000),
  /**
   * How long a sink's lease on a bus partition lasts without renewal (ms); renewed every third of
   * it. A dead sink's partitions are taken over within about this time. Set once per installation:
   * the first sink creates the lease bucket with it, and every sink then uses the bucket's value.
   */
  TALLY_SINK_LEASE_TTL_MS: int(15_000, 1000).pipe(z.number().max(300_000)),
  /**
   * A Bloom filter per leased partition in front of the dedup-ledger lookup: ids it rules out
   * (new ids, the common case) skip ClickHouse. `off`: every id is looked up (sink/README.md).
   */
  TALLY_SINK_BLOOM: z.enum(["on", "off"]).default("off"),
  TALLY_SINK_METRICS_PORT: int(9464, 0).pipe(z.number().max(65535)),
  TALLY_SINK_METRICS_HOST: z.string().default("127.0.0.1"),

  /**
   * Secret that signs portal tokens (at least 32 characters). Unset: a random secret is created
   * once in NATS KV and shared by every edge.
   */
  TALLY_PORTAL_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  /** How often a live usage stream re-reads usage (ms). */
  TALLY_USAGE_STREAM_INTERVAL_MS: int(500, 100),
  /** Most live usage streams one API key may hold open at once, per edge (more: 429). */
  TALLY_USAGE_STREAMS_PER_KEY: int(100, 1),
  /** Most live usage streams one portal token may hold open at once, per edge (more: 429). The usage page uses one. */
  TALLY_USAGE_STREAMS_PER_TOKEN: int(10, 1),

  /** How long after a period ends it is closed (late events still arriving); a plan's `grace_period` overrides it. */
  TALLY_CLOSE_GRACE: z
    .string()
    .regex(/^\d{1,6}(s|m|h|d)$/, "must be a duration such as 30m, 1h or 2d")
    .default("1h"),
  /** How often the close role looks for due periods (ms). */
  TALLY_CLOSE_INTERVAL_MS: int(60_000, 1000),
  /** The close role's leader lease: another close process takes over within about this after one dies. */
  TALLY_CLOSE_LEASE_TTL_MS: int(30_000, 1000),
  /** Invoice number prefix (`TALLY` → `TALLY-000042`); numbers are gapless per prefix. */
  TALLY_INVOICE_PREFIX: z
    .string()
    .regex(/^[A-Z0-9][A-Z0-9-]{0,15}$/, "must be 1-16 upper-case letters, digits or -")
    .default("TALLY"),

  /**
   * Stripe push (src/connectors/stripe): unset = no push. A secret (`sk_...`) or restricted
   * (`rk_...`) key with write access to invoices; never logged.
   */
  TALLY_STRIPE_SECRET_KEY: z.string().min(1).optional(),
  /** Stripe's API base URL; tests and self-hosted proxies point it elsewhere (split into host/port/protocol for the SDK). */
  TALLY_STRIPE_API_BASE: z.url().default("https://api.stripe.com"),
  /** Finalize the Stripe invoice after its lines are added (false: leave it a draft for review). */
  TALLY_STRIPE_FINALIZE: bool(true),
  /** Client-side limit on requests per second to Stripe (sandbox and per-endpoint default 25; live mode allows 100). */
  TALLY_STRIPE_MAX_RPS: int(25, 1).pipe(z.number().max(1000)),
  /** Client-side limit per Stripe endpoint (create, add_lines, finalize are each one; Stripe's default is 25/s). */
  TALLY_STRIPE_MAX_RPS_PER_ENDPOINT: int(25, 1).pipe(z.number().max(1000)),
  /** Timeout of each Stripe HTTP request (ms). */
  TALLY_STRIPE_TIMEOUT_MS: int(30_000, 100),
  /** Invoices pushed at once (the rate limiter bounds the requests; this bounds memory and open drafts). */
  TALLY_STRIPE_CONCURRENCY: int(8, 1).pipe(z.number().max(256)),
  /** Lines per `add_lines` request. */
  TALLY_STRIPE_LINES_PER_REQUEST: int(100, 1).pipe(z.number().max(250)),
  /** Lines one Stripe invoice may hold (Stripe: 250; some accounts have it raised). More: the invoice is pushed in parts. */
  TALLY_STRIPE_MAX_LINES_PER_INVOICE: int(250, 1),
  /** `collection_method` of a customer without `stripe_collection_method` metadata. */
  TALLY_STRIPE_COLLECTION_METHOD: z
    .enum(["charge_automatically", "send_invoice"])
    .default("charge_automatically"),
  /** `days_until_due` for `send_invoice` when the customer has no `stripe_days_until_due` metadata. */
  TALLY_STRIPE_DAYS_UNTIL_DUE: int(30, 0).pipe(z.number().max(3650)),
  /** Longest wait before a failed push is tried again (ms); the backoff doubles up to this. */
  TALLY_STRIPE_RETRY_MAX_MS: int(3_600_000, 1000),
  /** Signing secret of the Stripe webhook endpoint (`whsec_...`); unset = `POST /v1/webhooks/stripe` answers 404. */
  TALLY_STRIPE_WEBHOOK_SECRET: z.string().min(1).optional(),
  /**
   * Fault injection for crash tests only: the push SIGKILLs itself at this point of its first
   * invoice: `create`, `add_lines:<k>` (right after Stripe answered, before recording),
   * `before_finalize`, `finalize`. Never set this in production.
   */
  TALLY_FAULT_STRIPE_CRASH_AT: z
    .string()
    .regex(/^(create|add_lines:\d+|before_finalize|finalize)$/)
    .optional(),

  /** Xero custom connection client id (https://developer.xero.com/faq/custom-integration); unset (with the secret) = no Xero push. */
  TALLY_XERO_CLIENT_ID: z.string().min(1).optional(),
  TALLY_XERO_CLIENT_SECRET: z.string().min(1).optional(),
  /** Sent as `xero-tenant-id` when set (a custom connection does not need it; a standard app does). */
  TALLY_XERO_TENANT_ID: z.string().min(1).optional(),
  /** Xero's API base (`<base>/api.xro/2.0`); tests point it at the local Xero server. */
  TALLY_XERO_API_BASE: z.url().default("https://api.xero.com"),
  /** Xero's identity service (`<url>/connect/token`). */
  TALLY_XERO_IDENTITY_URL: z.url().default("https://identity.xero.com"),
  /** Scopes asked for with the client-credentials token (space-separated); unset = the connection's configured scopes. */
  TALLY_XERO_SCOPES: z.string().min(1).optional(),
  /** The organisation's base currency (ISO 4217); unset = read once from `GET /Organisation`. Manual journals post only in it. */
  TALLY_XERO_BASE_CURRENCY: z
    .string()
    .regex(/^[A-Za-z]{3}$/)
    .transform((v) => v.toUpperCase())
    .optional(),
  /** Timeout of each Xero HTTP request, token requests included (ms). */
  TALLY_XERO_TIMEOUT_MS: int(30_000, 100),
  /** Manual journals per request: Xero recommends batches of up to 50 elements. */
  TALLY_XERO_JOURNALS_PER_REQUEST: int(50, 1).pipe(z.number().max(500)),
  /** Largest request body sent (bytes); Xero refuses a POST over 3.5 MB. */
  TALLY_XERO_MAX_REQUEST_BYTES: int(3_000_000, 10_000).pipe(z.number().max(3_500_000)),
  /** Calls per minute window to one organisation (Xero: 60). */
  TALLY_XERO_CALLS_PER_MINUTE: int(60, 1).pipe(z.number().max(60)),
  /** Calls per day to one organisation (Xero: 5,000). */
  TALLY_XERO_CALLS_PER_DAY: int(5000, 1).pipe(z.number().max(5000)),
  /** The "minute" of TALLY_XERO_CALLS_PER_MINUTE (ms). Tests shorten it; keep 60000 in production. */
  TALLY_XERO_MINUTE_WINDOW_MS: int(60_000, 100),
  /** Calls in progress at once from this process (Xero allows 5 per organisation). */
  TALLY_XERO_CONCURRENCY: int(2, 1).pipe(z.number().max(5)),
  /**
   * How long after a batch was first sent a resend may reuse its Idempotency-Key (ms). Xero does
   * not publish the key lifetime in its API spec (integration guides say 6 minutes); after this
   * the pusher looks the journals up by their narration marker instead of resending.
   */
  TALLY_XERO_IDEMPOTENCY_TRUST_MS: int(300_000, 0),
  /** Refresh the access token this long before it expires (ms). */
  TALLY_XERO_TOKEN_REFRESH_MARGIN_MS: int(60_000, 0),
  /** Longest wait before a batch that failed retriably is tried again (ms); the backoff doubles up to this. */
  TALLY_XERO_RETRY_MAX_MS: int(3_600_000, 100),
  /**
   * Fault injection for crash tests only: the pusher SIGKILLs itself at this point of its first
   * batch: `after_record` (the send recorded, the request not made), `after_response` (Xero's
   * answer read, not recorded). Never set this in production.
   */
  TALLY_FAULT_XERO_CRASH_AT: z.enum(["after_record", "after_response"]).optional(),
  /**
   * How often the close role reconciles the current and the previous month (Tally ↔ Stripe ↔
   * journal, see `tally reconcile`); `0s` = never.
   */
  TALLY_RECONCILE_INTERVAL: z
    .string()
    .regex(/^\d{1,6}(s|m|h|d)$/, "must be a duration such as 30m, 1h or 2d (0s = off)")
    .default("1h"),
  /**
   * A document finalized (or paid in Stripe) less than this ago is not yet expected in Stripe or
   * the journal: reconciliation does not report it missing.
   */
  TALLY_RECONCILE_SETTLE: z
    .string()
    .regex(/^\d{1,6}(s|m|h|d)$/, "must be a duration such as 30m, 1h or 2d")
    .default("1h"),
  /**
   * Outbound webhooks (src/webhooks): endpoint URLs must be https unless this is true (dev and
   * tests only: plain http sends signed events, and the secret-derived signatures, in the clear).
   */
  TALLY_WEBHOOK_ALLOW_HTTP: bool(false),
  /** Timeout of one webhook delivery attempt, connect to last body byte (ms). The spec suggests 15-30 s. */
  TALLY_WEBHOOK_TIMEOUT_MS: int(15_000, 100).pipe(z.number().max(300_000)),
  /**
   * Waits before each retry of a failed delivery (after the immediate first attempt), as
   * durations (`500ms`, `5s`, `5m`, `2h`); each gets ±10 % jitter. Default: the Standard Webhooks
   * example schedule (10 attempts over about 75.5 h). Tests shorten it.
   */
  TALLY_WEBHOOK_RETRY_SCHEDULE: z
    .string()
    .regex(
      /^\s*\d{1,9}(ms|s|m|h|d)(\s*,\s*\d{1,9}(ms|s|m|h|d)){0,49}\s*$/,
      "must be a comma-separated list of durations such as 5s,5m,30m,2h",
    )
    .default("5s,5m,30m,2h,5h,10h,14h,20h,24h"),
  /** How long the previous secret of an endpoint still signs deliveries after a rotation (ms). */
  TALLY_WEBHOOK_SECRET_OVERLAP_MS: int(86_400_000, 0),
  /** Deliveries in flight at once to one endpoint (more wait in JetStream, not in memory); others are not held up. */
  TALLY_WEBHOOK_ENDPOINT_CONCURRENCY: int(8, 1).pipe(z.number().max(256)),
  /** Deliveries in flight at once per dispatcher process (all endpoints). */
  TALLY_WEBHOOK_MAX_INFLIGHT: int(256, 1).pipe(z.number().max(10_000)),
  /**
   * JetStream ack wait of the delivery consumer (ms): a dispatcher killed mid-delivery has its
   * deliveries handed out again after this. In-flight attempts are kept alive with `working()`.
   */
  TALLY_WEBHOOK_ACK_WAIT_MS: int(60_000, 1000),
  /** How often the close role evaluates usage alerts (`usage_alerts` of subscriptions), ms; 0 = off. */
  TALLY_WEBHOOK_THRESHOLD_INTERVAL_MS: int(300_000, 0),

  /**
   * How often the close role (its leader only) extends every meter's usage rollup to the newest
   * closed receive hour (`src/usage/README.md`, Rollup); the first round runs one interval after
   * the start. `0s` = never (reads then take the raw path: same answers, slower).
   */
  TALLY_ROLLUP_INTERVAL: z
    .string()
    .regex(/^\d{1,6}(s|m|h|d)$/, "must be a duration such as 30s, 5m or 1h (0s = off)")
    .default("5m"),

  TALLY_DEV_MODE: bool(false),
  /**
   * Fault injection for crash tests only: the sink SIGKILLs itself right after its Nth
   * ClickHouse insert (events and ledger inserts alternate), before acking (0 = off). Never set this in production.
   */
  TALLY_FAULT_CRASH_AFTER_INSERT: int(0, 0),
  /**
   * Fault injection for crash tests only: `tally catalog apply` SIGKILLs itself right after it
   * claimed a meter version, before writing the version's history record. Never set this in production.
   */
  TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM: bool(false),
  /**
   * Fault injection for crash tests only: the close SIGKILLs itself after storing its Nth draft
   * (`TALLY_FAULT_CLOSE_CRASH_AFTER_DRAFTS`) or finalizing its Nth invoice (`..._AFTER_FINALIZED`); 0 = off.
   */
  TALLY_FAULT_CLOSE_CRASH_AFTER_DRAFTS: int(0, 0),
  TALLY_FAULT_CLOSE_CRASH_AFTER_FINALIZED: int(0, 0),

  /**
   * The journal (src/accounting): the IANA time zone of the books. Entry dates and the months
   * revenue is recognized in are calendar days and months of this zone.
   */
  TALLY_ACCOUNTING_TIMEZONE: z
    .string()
    .refine((tz) => isValidZone(tz), "must be an IANA time zone such as UTC or Europe/Berlin")
    .default("UTC"),
  /**
   * Fault injection for crash tests only: journal posting SIGKILLs itself right after storing its
   * Nth entry (0 = off). Never set this in production.
   */
  TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES: int(0, 0),
});

export type Env = z.infer<typeof envSchema>;

/** Parsed configuration, grouped by concern. */
export interface Config {
  logLevel: Env["TALLY_LOG_LEVEL"];
  http: { host: string; port: number; workers: number };
  dataDir: string;
  devKey: string;
  devMode: boolean;
  nats: {
    url: string;
    prefix: string;
    partitions: number;
    replicas: number;
    streamMaxBytes: number;
  };
  clickhouse: {
    url: string;
    user: string;
    password: string;
    database: string;
    timeoutMs: number;
    /** The reads' user (TALLY_CLICKHOUSE_READ_USER, else `user`), its password and connection pool. */
    read: { user: string; password: string; connections: number };
  };
  limits: {
    backfillDays: number;
    dedupRetentionDays: number;
    maxBodyBytes: number;
    maxEventsPerRequest: number;
  };
  publish: { maxBytes: number; maxInflight: number; timeoutMs: number; maxPendingBytes: number };
  usage: {
    portalSecret: string | undefined;
    streamIntervalMs: number;
    streamsPerKey: number;
    streamsPerToken: number;
  };
  sink: {
    batchRows: number;
    lingerMs: number;
    maxInflight: number;
    ackWaitMs: number;
    leaseTtlMs: number;
    /** See TALLY_SINK_BLOOM. */
    bloom: boolean;
    metricsPort: number;
    metricsHost: string;
    /** See TALLY_FAULT_CRASH_AFTER_INSERT. */
    crashAfterInsert: number;
  };
  close: {
    graceMs: number;
    intervalMs: number;
    leaseTtlMs: number;
    invoicePrefix: string;
    /** See TALLY_FAULT_CLOSE_CRASH_AFTER_DRAFTS / _FINALIZED. */
    crashAfterDrafts: number;
    crashAfterFinalized: number;
  };
  /** See TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM. */
  crashAfterCatalogClaim: boolean;
  /** The Stripe push and webhook (TALLY_STRIPE_*). */
  stripe: StripeConfig;
  /** The Xero journal push (TALLY_XERO_*). */
  xero: XeroConfig;
  /** TALLY_RECONCILE_*: 0 = no scheduled run. */
  reconcile: { intervalMs: number; settleMs: number };
  /** TALLY_ROLLUP_INTERVAL: 0 = no background fill. */
  rollup: { intervalMs: number };
  /** The journal (TALLY_ACCOUNTING_*). */
  accounting: { timezone: string; crashAfterEntries: number };
  /** Outbound webhooks (TALLY_WEBHOOK_*). */
  webhooks: WebhookConfig;
}

/** The Xero connector's settings (see the TALLY_XERO_* variables). */
export interface XeroConfig {
  /** Unset (either): no push. */
  clientId: string | undefined;
  clientSecret: string | undefined;
  tenantId: string | undefined;
  apiBase: string;
  identityUrl: string;
  scopes: string | undefined;
  baseCurrency: string | undefined;
  timeoutMs: number;
  journalsPerRequest: number;
  maxRequestBytes: number;
  callsPerMinute: number;
  callsPerDay: number;
  minuteWindowMs: number;
  concurrency: number;
  idempotencyTrustMs: number;
  tokenRefreshMarginMs: number;
  retryMaxMs: number;
  /** See TALLY_FAULT_XERO_CRASH_AT. */
  crashAt: "after_record" | "after_response" | undefined;
}

/** Outbound webhook settings (see the TALLY_WEBHOOK_* variables). */
export interface WebhookConfig {
  allowHttp: boolean;
  timeoutMs: number;
  /** Waits before retries 1..n (ms), jitter not applied. */
  retryScheduleMs: number[];
  secretOverlapMs: number;
  endpointConcurrency: number;
  maxInflight: number;
  ackWaitMs: number;
  thresholdIntervalMs: number;
}

/** The Stripe connector's settings (see the TALLY_STRIPE_* variables). */
export interface StripeConfig {
  /** Unset: no push. */
  secretKey: string | undefined;
  apiBase: string;
  finalize: boolean;
  maxRps: number;
  maxRpsPerEndpoint: number;
  timeoutMs: number;
  concurrency: number;
  linesPerRequest: number;
  maxLinesPerInvoice: number;
  collectionMethod: "charge_automatically" | "send_invoice";
  daysUntilDue: number;
  retryMaxMs: number;
  webhookSecret: string | undefined;
  /** See TALLY_FAULT_STRIPE_CRASH_AT. */
  crashAt: string | undefined;
}

/** Thrown by {@link loadConfig} with one line per bad variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses the environment once, failing with every bad key listed. */
export function loadConfig(source: Record<string, string | undefined> = process.env): Config {
  const result = envSchema.safeParse(source);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  return toConfig(result.data);
}

/** Builds a Config from already-typed values; tests use this with overrides. */
export function toConfig(e: Env): Config {
  return {
    logLevel: e.TALLY_LOG_LEVEL,
    http: { host: e.TALLY_HTTP_HOST, port: e.TALLY_HTTP_PORT, workers: e.TALLY_EDGE_WORKERS },
    dataDir: e.TALLY_DATA_DIR,
    devKey: e.TALLY_DEV_KEY,
    devMode: e.TALLY_DEV_MODE,
    nats: {
      url: e.TALLY_NATS_URL,
      prefix: e.TALLY_NATS_PREFIX,
      partitions: e.TALLY_PARTITIONS,
      replicas: e.TALLY_STREAM_REPLICAS,
      streamMaxBytes: e.TALLY_STREAM_MAX_BYTES,
    },
    clickhouse: {
      url: e.TALLY_CLICKHOUSE_URL,
      user: e.TALLY_CLICKHOUSE_USER,
      password: e.TALLY_CLICKHOUSE_PASSWORD,
      database: e.TALLY_CLICKHOUSE_DATABASE,
      timeoutMs: e.TALLY_CLICKHOUSE_TIMEOUT_MS,
      read: {
        user: e.TALLY_CLICKHOUSE_READ_USER ?? e.TALLY_CLICKHOUSE_USER,
        password:
          e.TALLY_CLICKHOUSE_READ_PASSWORD ??
          (e.TALLY_CLICKHOUSE_READ_USER === undefined ||
          e.TALLY_CLICKHOUSE_READ_USER === e.TALLY_CLICKHOUSE_USER
            ? e.TALLY_CLICKHOUSE_PASSWORD
            : ""),
        connections: e.TALLY_CLICKHOUSE_READ_CONNECTIONS,
      },
    },
    limits: {
      backfillDays: e.TALLY_BACKFILL_DAYS,
      dedupRetentionDays: Math.max(e.TALLY_DEDUP_RETENTION_DAYS, e.TALLY_BACKFILL_DAYS),
      maxBodyBytes: e.TALLY_MAX_BODY_BYTES,
      maxEventsPerRequest: e.TALLY_MAX_EVENTS_PER_REQUEST,
    },
    publish: {
      maxBytes: e.TALLY_PUBLISH_MAX_BYTES,
      maxInflight: e.TALLY_PUBLISH_MAX_INFLIGHT,
      timeoutMs: e.TALLY_PUBLISH_TIMEOUT_MS,
      maxPendingBytes: e.TALLY_EDGE_MAX_PENDING_BYTES,
    },
    usage: {
      portalSecret: e.TALLY_PORTAL_SECRET,
      streamIntervalMs: e.TALLY_USAGE_STREAM_INTERVAL_MS,
      streamsPerKey: e.TALLY_USAGE_STREAMS_PER_KEY,
      streamsPerToken: e.TALLY_USAGE_STREAMS_PER_TOKEN,
    },
    sink: {
      batchRows: e.TALLY_SINK_BATCH_ROWS,
      lingerMs: e.TALLY_SINK_LINGER_MS,
      maxInflight: e.TALLY_SINK_MAX_INFLIGHT,
      ackWaitMs: e.TALLY_SINK_ACK_WAIT_MS,
      leaseTtlMs: e.TALLY_SINK_LEASE_TTL_MS,
      bloom: e.TALLY_SINK_BLOOM === "on",
      metricsPort: e.TALLY_SINK_METRICS_PORT,
      metricsHost: e.TALLY_SINK_METRICS_HOST,
      crashAfterInsert: e.TALLY_FAULT_CRASH_AFTER_INSERT,
    },
    close: {
      graceMs: parseDuration(e.TALLY_CLOSE_GRACE),
      intervalMs: e.TALLY_CLOSE_INTERVAL_MS,
      leaseTtlMs: e.TALLY_CLOSE_LEASE_TTL_MS,
      invoicePrefix: e.TALLY_INVOICE_PREFIX,
      crashAfterDrafts: e.TALLY_FAULT_CLOSE_CRASH_AFTER_DRAFTS,
      crashAfterFinalized: e.TALLY_FAULT_CLOSE_CRASH_AFTER_FINALIZED,
    },
    crashAfterCatalogClaim: e.TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM,
    stripe: {
      secretKey: e.TALLY_STRIPE_SECRET_KEY,
      apiBase: e.TALLY_STRIPE_API_BASE,
      finalize: e.TALLY_STRIPE_FINALIZE,
      maxRps: e.TALLY_STRIPE_MAX_RPS,
      maxRpsPerEndpoint: e.TALLY_STRIPE_MAX_RPS_PER_ENDPOINT,
      timeoutMs: e.TALLY_STRIPE_TIMEOUT_MS,
      concurrency: e.TALLY_STRIPE_CONCURRENCY,
      linesPerRequest: e.TALLY_STRIPE_LINES_PER_REQUEST,
      maxLinesPerInvoice: e.TALLY_STRIPE_MAX_LINES_PER_INVOICE,
      collectionMethod: e.TALLY_STRIPE_COLLECTION_METHOD,
      daysUntilDue: e.TALLY_STRIPE_DAYS_UNTIL_DUE,
      retryMaxMs: e.TALLY_STRIPE_RETRY_MAX_MS,
      webhookSecret: e.TALLY_STRIPE_WEBHOOK_SECRET,
      crashAt: e.TALLY_FAULT_STRIPE_CRASH_AT,
    },
    xero: {
      clientId: e.TALLY_XERO_CLIENT_ID,
      clientSecret: e.TALLY_XERO_CLIENT_SECRET,
      tenantId: e.TALLY_XERO_TENANT_ID,
      apiBase: e.TALLY_XERO_API_BASE,
      identityUrl: e.TALLY_XERO_IDENTITY_URL,
      scopes: e.TALLY_XERO_SCOPES,
      baseCurrency: e.TALLY_XERO_BASE_CURRENCY,
      timeoutMs: e.TALLY_XERO_TIMEOUT_MS,
      journalsPerRequest: e.TALLY_XERO_JOURNALS_PER_REQUEST,
      maxRequestBytes: e.TALLY_XERO_MAX_REQUEST_BYTES,
      callsPerMinute: e.TALLY_XERO_CALLS_PER_MINUTE,
      callsPerDay: e.TALLY_XERO_CALLS_PER_DAY,
      minuteWindowMs: e.TALLY_XERO_MINUTE_WINDOW_MS,
      concurrency: e.TALLY_XERO_CONCURRENCY,
      idempotencyTrustMs: e.TALLY_XERO_IDEMPOTENCY_TRUST_MS,
      tokenRefreshMarginMs: e.TALLY_XERO_TOKEN_REFRESH_MARGIN_MS,
      retryMaxMs: e.TALLY_XERO_RETRY_MAX_MS,
      crashAt: e.TALLY_FAULT_XERO_CRASH_AT,
    },
    reconcile: {
      intervalMs: parseDuration(e.TALLY_RECONCILE_INTERVAL),
      settleMs: parseDuration(e.TALLY_RECONCILE_SETTLE),
    },
    rollup: { intervalMs: parseDuration(e.TALLY_ROLLUP_INTERVAL) },
    accounting: {
      timezone: e.TALLY_ACCOUNTING_TIMEZONE,
      crashAfterEntries: e.TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES,
    },
    webhooks: {
      allowHttp: e.TALLY_WEBHOOK_ALLOW_HTTP,
      timeoutMs: e.TALLY_WEBHOOK_TIMEOUT_MS,
      retryScheduleMs: e.TALLY_WEBHOOK_RETRY_SCHEDULE.split(",").map((d) => parseDuration(d.trim())),
      secretOverlapMs: e.TALLY_WEBHOOK_SECRET_OVERLAP_MS,
      endpointConcurrency: e.TALLY_WEBHOOK_ENDPOINT_CONCURRENCY,
      maxInflight: e.TALLY_WEBHOOK_MAX_INFLIGHT,
      ackWaitMs: e.TALLY_WEBHOOK_ACK_WAIT_MS,
      thresholdIntervalMs: e.TALLY_WEBHOOK_THRESHOLD_INTERVAL_MS,
    },
  };
}

/** `500ms`, `30m`, `1h`, `2d` (already validated) → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (m === null) throw new Error(`not a duration: ${text}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  return Number(m[1]) * unit[m[2] as keyof typeof unit];
}
