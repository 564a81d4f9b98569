import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry } from "prom-client";
import type { Config } from "../config/index.js";
import { registry, type Logger } from "../observability/index.js";

/**
 * Several edge processes on one port (`tally edge --workers N`, `TALLY_EDGE_WORKERS`), with
 * node:cluster: the primary only holds the listening socket and hands each new connection to
 * a worker (round robin); every worker is a whole edge (`startEdge`: its own NATS connection,
 * group-commit publisher and caches), exactly as several edges behind a load balancer, which
 * the edge already supports (stateless; every invariant holds per request, in one process).
 * One Node.js process parses HTTP and validates events on one core; a second core is only
 * used by a second process. Node 20's `net` has no `reusePort` (Node 22.12+), hence cluster.
 *
 * `/metrics` of any worker answers the sum over all workers (prom-client's AggregatorRegistry
 * in the primary), so counters such as `tally_events_accepted_total` mean the same as with one
 * process whichever worker a scrape lands on.
 */

/** A worker ended before it listened; `exitCode` is its (the reason is on its stderr). */
export class WorkerStartError extends Error {
  readonly exitCode: number;
  constructor(code: number | null, signal: string | null) {
    super(`edge worker exited before listening (code ${code}, signal ${signal})`);
    this.exitCode = code !== null && code !== 0 ? code : 1;
  }
}

const metricsRequest = "tally:cluster-metrics";
const metricsResponse = "tally:cluster-metrics-response";

interface MetricsMessage {
  type: string;
  id: number;
  text?: string;
  error?: string;
}

/**
 * Runs the primary: forks `workers` edge processes (the first alone, so stream and bucket
 * creation at start-up never races), replaces a worker that dies, serves metrics requests.
 * Resolves once every worker is listening; `stop()` stops them all (each drains as on SIGTERM).
 */
export async function startEdgePrimary(
  config: Config,
  log: Logger,
  workers: number,
): Promise<{ stop(): Promise<void> }> {
  const aggregator = new AggregatorRegistry();
  let stopping = false;
  const fork = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const w = cluster.fork();
      w.on("message", (m: MetricsMessage) => {
        if (m?.type !== metricsRequest) return;
        aggregator.clusterMetrics().then(
          (text) => w.send({ type: metricsResponse, id: m.id, text }),
          (err: unknown) => w.send({ type: metricsResponse, id: m.id, error: (err as Error).message }),
        );
      });
      w.once("listening", () => resolve(w));
      w.once("exit", (code, signal) => {
        reject(new WorkerStartError(code, signal));
      });
    });
  cluster.on("exit", (w, code, signal) => {
    if (stopping) return;
    log.error({ pid: w.process.pid, code, signal }, "edge worker died; starting another in 1 s");
    // The delay keeps a worker that cannot start (NATS down) from being re-forked in a loop.
    setTimeout(() => {
      if (!stopping) fork().catch((err: unknown) => log.error({ err }, "edge worker did not start"));
    }, 1000).unref();
  });
  try {
    await fork();
    await Promise.all(Array.from({ length: workers - 1 }, fork));
  } catch (err: unknown) {
    // A worker that cannot start (bad config, partition count mismatch) stops the whole edge.
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    throw err;
  }
  log.info({ workers, port: config.http.port }, "edge workers listening");
  return {
    async stop() {
      stopping = true;
      const all = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      await Promise.all(
        all.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              w.once("exit", () => resolve());
              w.process.kill("SIGTERM");
            }),
        ),
      );
    },
  };
}

let nextId = 0;
const waiting = new Map<number, { resolve(text: string): void; reject(err: Error): void }>();

/** In a worker: make this process's registry the one the primary aggregates. */
export function joinEdgeCluster(): void {
  // Constructing one installs prom-client's worker-side listener that answers the primary.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
  process.on("message", (m: MetricsMessage) => {
    if (m?.type !== metricsResponse) return;
    const w = waiting.get(m.id);
    if (w === undefined) return;
    waiting.delete(m.id);
    if (m.error !== undefined) w.reject(new Error(m.error));
    else w.resolve(m.text ?? "");
  });
}

/** This process's metrics text, or in a cluster worker the sum over every worker. */
export function metricsText(): Promise<string> {
  if (!cluster.isWorker || process.send === undefined) return registry.metrics();
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    process.send!({ type: metricsRequest, id });
  });
}
