import { createServer, type Server } from "node:http";
import { ensureStreams } from "../bus/index.js";
import { createClickHouse, isSchemaCurrent } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import { registry, type Logger } from "../observability/index.js";
import { Sink } from "../sink/index.js";
import { connectNats, warnIfNotHostCrashSafe } from "./connect.js";

/** A running sink process. */
export interface RunningSink {
  metricsPort: number;
  sink: Sink;
  /** Drain: flush and ack everything buffered, then close connections. */
  stop(): Promise<void>;
}

/** Starts the sink and its metrics endpoint (`/metrics`, `/healthz`). */
export async function startSink(config: Config, log: Logger, partitions?: number[]): Promise<RunningSink> {
  const clickhouse = createClickHouse(config.clickhouse);
  if (!(await isSchemaCurrent(clickhouse, config.clickhouse.database))) {
    throw new Error(
      `ClickHouse database ${config.clickhouse.database} is not migrated; run 'tally migrate' first`,
    );
  }
  warnIfNotHostCrashSafe(config, log);
  const nc = await connectNats(config, "tally-sink");
  const jsm = await nc.jetstreamManager();
  try {
    // Refuses a partition count other than the recorded one (PartitionCountMismatch).
    await ensureStreams(jsm, config);
  } catch (err: unknown) {
    await nc.close();
    await clickhouse.close();
    throw err;
  }
  const sink = new Sink({
    config,
    js: nc.jetstream(),
    jsm,
    clickhouse,
    log,
    ...(partitions ? { partitions } : {}),
  });
  await sink.start();
  let server: Server | null = null;
  let metricsPort = config.sink.metricsPort;
  if (metricsPort !== 0 || config.devMode) {
    server = createServer((req, res) => {
      if (req.url === "/metrics") {
        registry.metrics().then(
          (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
          () => res.writeHead(500).end(),
        );
      } else if (req.url === "/healthz") {
        res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server!.listen(metricsPort, config.sink.metricsHost, resolve));
    const addr = server.address();
    if (addr !== null && typeof addr !== "string") metricsPort = addr.port;
  }
  return {
    metricsPort,
    sink,
    async stop() {
      await sink.stop();
      await nc.drain();
      await clickhouse.close();
      if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
