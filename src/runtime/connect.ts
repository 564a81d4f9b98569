import { connect, type NatsConnection } from "nats";
import type { Config } from "../config/index.js";

/** Connects to NATS with unlimited reconnects (a restarted server is rejoined, never given up on). */
export async function connectNats(cfg: Config, name: string): Promise<NatsConnection> {
  return connect({
    servers: cfg.nats.url.split(","),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: 5000,
  });
}
