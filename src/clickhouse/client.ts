import { createClient, type ClickHouseClient } from "@clickhouse/client";
import type { Config } from "../config/index.js";
import { RowEncodingError } from "./row-binary.js";

export type { ClickHouseClient };

/** Creates the ClickHouse HTTP client. Every request has a timeout (`TALLY_CLICKHOUSE_TIMEOUT_MS`). */
export function createClickHouse(
  cfg: Omit<Config["clickhouse"], "read">,
  maxOpenConnections = 16,
): ClickHouseClient {
  return createClient({
    url: cfg.url,
    username: cfg.user,
    password: cfg.password,
    request_timeout: cfg.timeoutMs,
    max_open_connections: maxOpenConnections,
    compression: { request: false, response: false },
    keep_alive: { enabled: true },
  });
}

/**
 * The client for reads (usage API, live streams, portal, event debugger): the read user
 * (`TALLY_CLICKHOUSE_READ_USER`), whose server-side profile bounds each query's time, threads
 * and memory and the user's concurrent queries, and its own connection pool, so read load
 * waits for read connections and never for the sink's. See deploy/clickhouse/.
 */
export function createClickHouseReader(cfg: Config["clickhouse"]): ClickHouseClient {
  return createClickHouse({ ...cfg, user: cfg.read.user, password: cfg.read.password }, cfg.read.connections);
}

/**
 * ClickHouse error codes of an insert that mean the *rows* are bad, so retrying the same rows
 * cannot succeed. Not here on purpose: 62 SYNTAX_ERROR (and any other error of a statement's
 * text): Tally writes every statement itself, so such an error is a bug or a server setting
 * (e.g. `max_query_size`), never the events' fault; their callers retry and alert instead.
 */
const permanentCodes = new Set([
  "6", // CANNOT_PARSE_TEXT
  "26", // CANNOT_PARSE_QUOTED_STRING
  "27", // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  "33", // CANNOT_READ_ALL_DATA (also a RowBinary body that ends inside a row)
  "38", // CANNOT_PARSE_DATE
  "53", // TYPE_MISMATCH
  "69", // ARGUMENT_OUT_OF_BOUND
  "70", // CANNOT_CONVERT_TYPE
  "72", // CANNOT_PARSE_NUMBER
  "117", // INCORRECT_DATA
  "128", // TOO_LARGE_ARRAY_SIZE (RowBinary)
  "131", // TOO_LARGE_STRING_SIZE
]);

/**
 * Whether an error from a ClickHouse *insert* is permanent for the rows that caused it, or the
 * rows could not be encoded (RowEncodingError) (for a
 * query Tally wrote, no error is: see partition-worker). Decided by the
 * server's numeric error code (never by message text); anything else (network, timeouts,
 * TOO_MANY_PARTS, memory limits, server restarts) is retriable.
 */
export function isPermanentInsertError(err: unknown): boolean {
  // Rows the client cannot even encode are as bad as rows the server cannot parse.
  if (err instanceof RowEncodingError) return true;
  const code = clickHouseErrorCode(err);
  return code !== undefined && permanentCodes.has(code);
}

/**
 * The server's numeric error code. @clickhouse/client parses it from a message format that
 * ClickHouse 18.16 does not use (no trailing `(TYPE_NAME)`), leaving `code` undefined there; the
 * code is then read from the message's fixed `Code: N` prefix, which every version prints.
 */
export function clickHouseErrorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === "string" && /^\d+$/.test(e.code)) return e.code;
  if (typeof e?.message === "string") return /^Code: (\d+)/.exec(e.message)?.[1];
  return undefined;
}
