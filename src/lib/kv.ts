import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

/**
 * A name for one process holding a lease in NATS KV (`<host>-<pid>-<random>`), KV-key safe, unique
 * even when a process restarts with the same pid.
 */
export function holderId(): string {
  const host = hostname()
    .replace(/[^A-Za-z0-9_-]/g, "_")
    .slice(0, 40);
  return `${host}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** JetStream's "wrong last sequence" (10071): a KV compare-and-set (create, update, delete) lost. */
export function isWrongLastSequence(err: unknown): boolean {
  return (err as { api_error?: { err_code?: number } } | null)?.api_error?.err_code === 10071;
}
