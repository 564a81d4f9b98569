import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import type { JournalEntry } from "../src/accounting/journal.js";
import { busNames } from "../src/bus/index.js";
import type { Config } from "../src/config/index.js";
import {
  CallLimiter,
  XeroClient,
  XeroPusher,
  XeroStore,
  type XeroPushDeps,
} from "../src/connectors/xero/index.js";
import { connectNats } from "../src/runtime/connect.js";
import type { OutboundEvent, WebhookEmitter } from "../src/webhooks/emitter.js";
import { childEnv, log, testConfig } from "./helpers.js";
import { startXeroServer, type StartOptions, type XeroTestServer } from "./xero-server/index.js";

/** Records raised events (the outbox is another module; here only what the pusher raises matters). */
export class RecordingEmitter implements WebhookEmitter {
  readonly events: OutboundEvent[] = [];
  emit(event: OutboundEvent): Promise<void> {
    if (!this.events.some((e) => e.id === event.id)) this.events.push(event);
    return Promise.resolve();
  }
}

/** What the Xero push tests share: the local Xero server and the push store on a real NATS. */
export interface XeroEnv {
  srv: XeroTestServer;
  config: Config;
  nc: NatsConnection;
  store: XeroStore;
  emitter: RecordingEmitter;
  /** A pusher (and its client) on this store, with config overrides. */
  pusher(
    overrides?: Partial<Config["xero"]>,
    extra?: Partial<XeroPushDeps>,
  ): { pusher: XeroPusher; client: XeroClient };
  /** Runs tests/fixtures/xero-push-child.js (dist/) on `entries` with extra env; resolves with its exit. */
  child(
    entries: readonly JournalEntry[],
    env?: Record<string, string>,
  ): Promise<{ exit: NodeJS.Signals | number | null; stdout: string }>;
  stop(): Promise<void>;
}

/** Xero settings for a test: the local server, a small fast limiter (the production default stays 60/min). */
export function xeroEnvVars(srv: XeroTestServer, extra: Record<string, string> = {}): Record<string, string> {
  return {
    TALLY_XERO_CLIENT_ID: srv.clientId,
    TALLY_XERO_CLIENT_SECRET: srv.clientSecret,
    TALLY_XERO_API_BASE: srv.url,
    TALLY_XERO_IDENTITY_URL: srv.url,
    TALLY_XERO_TIMEOUT_MS: "5000",
    ...extra,
  };
}

export async function startXeroEnv(
  name: string,
  serverOpts: StartOptions = {},
  vars: Record<string, string> = {},
): Promise<XeroEnv> {
  const srv = await startXeroServer(serverOpts);
  const config = testConfig(xeroEnvVars(srv, vars));
  const nc = await connectNats(config, name);
  const store = await XeroStore.open(nc.jetstream(), busNames(config.nats.prefix).xeroBucket, 1);
  const emitter = new RecordingEmitter();
  const clients: XeroClient[] = [];
  return {
    srv,
    config,
    nc,
    store,
    emitter,
    pusher(overrides = {}, extra = {}) {
      const x = { ...config.xero, ...overrides };
      const limiter = new CallLimiter(store, {
        perMinute: x.callsPerMinute,
        windowMs: x.minuteWindowMs,
        perDay: x.callsPerDay,
      });
      const client = new XeroClient(x, limiter, log);
      clients.push(client);
      return { pusher: new XeroPusher({ store, client, config: x, log, emitter, ...extra }), client };
    },
    async child(entries, env = {}) {
      const file = join(
        tmpdir(),
        `xero-entries-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.json`,
      );
      writeFileSync(file, JSON.stringify(entries));
      const proc = spawn(process.execPath, ["dist/test/fixtures/xero-push-child.js", file], {
        env: { ...childEnv(config), ...xeroEnvVars(srv, vars), TALLY_LOG_LEVEL: "silent", ...env },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let stdout = "";
      proc.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      childProcs.add(proc);
      const exit = await new Promise<NodeJS.Signals | number | null>((r) =>
        proc.once("exit", (code, sig) => r(sig ?? code)),
      );
      childProcs.delete(proc);
      return { exit, stdout };
    },
    async stop() {
      for (const p of childProcs) p.kill("SIGKILL");
      for (const c of clients) await c.close();
      await nc.drain();
      await srv.stop();
    },
  };
}

const childProcs = new Set<ReturnType<typeof spawn>>();

/** The latest spawned child (crash tests kill it from outside). */
export function runningChildren(): ReturnType<typeof spawn>[] {
  return [...childProcs];
}
