import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Creates the process logger: JSON lines with fixed fields (`role`, `pid`).
 * Secrets never reach it: request logging records key ids, never the bearer token.
 */
export function createLogger(role: string, level: string): Logger {
  return pino({
    level,
    base: { role, pid: process.pid },
    redact: { paths: ["*.authorization", "*.apiKey", "*.password", "*.key"], censor: "[redacted]" },
  });
}
