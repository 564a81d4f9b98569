import type { JetStreamClient } from "nats";
import type { JournalReader } from "../../accounting/journal.js";
import { busNames } from "../../bus/index.js";
import type { Config } from "../../config/index.js";
import type { Logger } from "../../observability/index.js";
import type { WebhookEmitter } from "../../webhooks/emitter.js";
import { XeroClient } from "./client.js";
import { CallLimiter } from "./limiter.js";
import { XeroPusher } from "./push.js";
import { XeroStore } from "./store.js";

/** A pusher and what it holds open (close the client when done). */
export interface OpenedXeroPusher {
  pusher: XeroPusher;
  client: XeroClient;
  store: XeroStore;
}

/**
 * The Xero pusher as a process runs it (close role, `tally push xero`): its state in
 * `<prefix>_xero`, the shared call limiter (60/min, 5,000/day per organisation, kept in the same
 * bucket so every process pushing to the organisation shares it), the undici client, and the
 * crash-test fault point (TALLY_FAULT_XERO_CRASH_AT; off in production). Null when
 * TALLY_XERO_CLIENT_ID / _SECRET are unset.
 *
 * @example
 * ```ts
 * const xero = await openXeroPusher({ js, config, log, emitter, journal });
 * if (xero) {
 *   const report = await xero.pusher.pushJournals(await journal.list({ from, to }));
 *   await xero.client.close();
 * }
 * ```
 */
export async function openXeroPusher(deps: {
  js: JetStreamClient;
  config: Config;
  log: Logger;
  emitter?: WebhookEmitter;
  journal?: JournalReader;
}): Promise<OpenedXeroPusher | null> {
  const x = deps.config.xero;
  if (x.clientId === undefined || x.clientSecret === undefined) return null;
  const store = await XeroStore.open(
    deps.js,
    busNames(deps.config.nats.prefix).xeroBucket,
    deps.config.nats.replicas,
  );
  const log = deps.log.child({ connector: "xero" });
  const limiter = new CallLimiter(store, {
    perMinute: x.callsPerMinute,
    windowMs: x.minuteWindowMs,
    perDay: x.callsPerDay,
  });
  const client = new XeroClient(x, limiter, log);
  const crashAt = x.crashAt;
  const pusher = new XeroPusher({
    store,
    client,
    config: x,
    log,
    ...(deps.emitter !== undefined ? { emitter: deps.emitter } : {}),
    ...(deps.journal !== undefined ? { journal: deps.journal } : {}),
    ...(crashAt !== undefined
      ? { crashPoint: (p: string) => p === crashAt && process.kill(process.pid, "SIGKILL") }
      : {}),
  });
  return { pusher, client, store };
}
