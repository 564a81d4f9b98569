import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { KV, KvEntry } from "nats";

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

/** A KV value as JSON with the revision it was read at; null for a missing or deleted key. */
export async function readJson<T>(kv: KV, key: string): Promise<{ value: T; revision: number } | null> {
  const e = await kv.get(key);
  return e === null || e.operation !== "PUT" ? null : { value: e.json<T>(), revision: e.revision };
}

/**
 * Compare-and-set of one JSON value: reads it, applies `fn` and writes the result only if the key
 * did not change in between; on a lost race re-reads and re-applies (with a small random wait),
 * up to `maxAttempts`, then throws `conflict(message)`. `fn` returning null writes nothing and
 * resolves with the current value.
 */
export async function updateJson<T>(
  kv: KV,
  key: string,
  fn: (cur: T | null) => T | null,
  opts: { maxAttempts: number; conflict: (message: string) => Error },
): Promise<T | null> {
  for (let attempt = 0; ; attempt++) {
    const e = await kv.get(key);
    const cur = e === null || e.operation !== "PUT" ? null : e.json<T>();
    const next = fn(cur);
    if (next === null) return cur;
    try {
      if (e === null) await kv.create(key, JSON.stringify(next));
      // A purged or deleted key has a revision too: update on it (create would fail).
      else await kv.update(key, JSON.stringify(next), e.revision);
      return next;
    } catch (err: unknown) {
      if (!isWrongLastSequence(err)) throw err;
      if (attempt + 1 >= opts.maxAttempts)
        throw opts.conflict(`${key} changed concurrently ${attempt + 1} times`);
      await new Promise((r) => setTimeout(r, Math.random() * 5 * (attempt + 1)));
    }
  }
}

/**
 * How long a KV watch may go without delivering anything before its initial values are all in;
 * then it is opened again. Under load (a catalog apply of 100,000 objects next to a busy
 * ClickHouse) a watch whose consumer creation was lost was seen waiting forever for values that
 * never come. A large bucket that keeps delivering is never cut off.
 */
export const watchLoadTimeoutMs = 30_000;

/**
 * Resolves when `ready` does; rejects when `received()` (how many values the watch delivered so
 * far) did not change for `ms` before that (the caller stops the watch and opens it again).
 */
export async function loadedWithin(
  ready: Promise<void>,
  ms: number,
  what: string,
  received: () => number,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise<never>((_, reject) => {
        let last = received();
        let since = Date.now();
        timer = setInterval(
          () => {
            const n = received();
            if (n !== last) {
              last = n;
              since = Date.now();
            } else if (Date.now() - since >= ms) {
              reject(new Error(`${what}: nothing delivered for ${ms} ms before the initial values were in`));
            }
          },
          Math.min(1000, ms),
        );
      }),
    ]);
  } finally {
    clearInterval(timer);
  }
}

/**
 * Opens a KV watch on `key` and resolves once its current values were delivered to `onEntry`,
 * with the watch's `stop` and the promise of its loop. A watch that stalls before that
 * ({@link loadedWithin}) is stopped and opened again (`reset` runs first, to forget what the
 * stalled one delivered), at most 4 times; then the error is thrown.
 */
export async function watchLoaded(
  kv: KV,
  watch: { key: string; headersOnly?: boolean },
  onEntry: (e: KvEntry) => void,
  what: string,
  opts: { reset?: () => void; log?: { warn(obj: object, msg: string): void } } = {},
): Promise<{ stop: () => void; done: Promise<void> }> {
  for (let attempt = 1; ; attempt++) {
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => (initialized = resolve));
    const iter = await kv.watch({
      key: watch.key,
      ...(watch.headersOnly ? { headers_only: true } : {}),
      initializedFn: () => initialized(),
    });
    let received = 0;
    const done = (async () => {
      for await (const e of iter) {
        received++;
        onEntry(e);
      }
    })();
    try {
      await loadedWithin(ready, watchLoadTimeoutMs, what, () => received);
      return { stop: () => iter.stop(), done };
    } catch (err: unknown) {
      iter.stop();
      await done.catch(() => undefined);
      if (attempt >= 4) throw err;
      opts.reset?.();
      opts.log?.warn({ err, attempt }, `${what} did not load; opening it again`);
    }
  }
}
