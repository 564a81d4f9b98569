import { connect, type NatsConnection } from "nats";
import type { Config } from "../config/index.js";
import type { Logger } from "../observability/index.js";

/** Connects to NATS with unlimited reconnects (a restarted server is rejoined, never given up on). */
export async function connectNats(cfg: Config, name: string): Promise<NatsConnection> {
  return connect({
    servers: cfg.nats.url.split(","),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: 5000,
    // An Error (with its stack) per request, only to improve the trace of a timeout: ~15% of
    // the close's CPU at 100,000 invoices. Timeouts still fail with a NatsError.
    noAsyncTraces: true,
  });
}

let durabilityWarned = false;

/**
 * Warns once per process, outside dev mode, when a host crash can lose acknowledged events:
 * with fewer than 3 stream replicas a 2xx means "in one nats-server's page cache", and
 * nats-server fsyncs its files only every `sync_interval` (default 2 min). See README
 * "Durability". Returns whether it warned.
 */
export function warnIfNotHostCrashSafe(cfg: Config, log: Logger): boolean {
  if (cfg.devMode || cfg.nats.replicas >= 3 || durabilityWarned) return false;
  durabilityWarned = true;
  log.warn(
    { replicas: cfg.nats.replicas },
    "TALLY_STREAM_REPLICAS < 3: a crash of the NATS host (power loss, kernel panic) can lose events " +
      "already acknowledged with 2xx, unless nats-server runs with `sync_interval: always`; " +
      "use a 3-node JetStream cluster with TALLY_STREAM_REPLICAS=3 (README: Durability)",
  );
  return true;
}
