import cluster from "node:cluster";
import type { Command } from "commander";
import { createClickHouse, migrate } from "../../clickhouse/index.js";
import { ensureStreams, PartitionCountMismatch } from "../../bus/index.js";
import { createLogger, type Logger } from "../../observability/index.js";
import { connectNats } from "../../runtime/connect.js";
import { startEdge } from "../../runtime/edge.js";
import { joinEdgeCluster, startEdgePrimary, WorkerStartError } from "../../runtime/edge-cluster.js";
import { startSink } from "../../runtime/sink.js";
import { configOrExit } from "../config.js";

/**
 * Runs `stop` once on SIGTERM/SIGINT, then exits. A repeated signal within 3 s is ignored
 * (Ctrl-C under `npm run` delivers SIGINT both directly and forwarded by npm); a later one
 * forces exit.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>): void {
  let stoppingSince = 0;
  const handler = (signal: NodeJS.Signals) => {
    if (stoppingSince > 0) {
      if (Date.now() - stoppingSince < 3000) return;
      log.warn({ signal }, "forced exit");
      process.exit(1);
    }
    stoppingSince = Date.now();
    log.info({ signal }, "draining");
    stop().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}

/**
 * Runs a role's start-up; a configuration that contradicts the running installation (the
 * partition count) ends the process with the reason on stderr and exit code 2, instead of a
 * process that logged a failure but stays up on its open NATS connection.
 */
async function startOrExit<T>(start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err: unknown) {
    if (err instanceof PartitionCountMismatch) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

const envHelp = "\nConfiguration comes from TALLY_* environment variables; see README 'Configuration'.";

export function registerServeCommands(program: Command): void {
  program
    .command("edge")
    .description("HTTP ingest and read APIs (stateless; run several behind a load balancer)")
    .option(
      "--workers <n>",
      "edge processes sharing the port (node:cluster), e.g. one per core (default: TALLY_EDGE_WORKERS, 1)",
    )
    .addHelpText("after", envHelp)
    .action(async (opts: { workers?: string }) => {
      const config = configOrExit();
      const log = createLogger("edge", config.logLevel);
      let workers = config.http.workers;
      if (opts.workers !== undefined) {
        workers = Number(opts.workers);
        if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
          process.stderr.write("--workers must be an integer in [1, 64]\n");
          process.exit(2);
        }
      }
      if (workers > 1 && cluster.isPrimary) {
        const primary = await startEdgePrimary(config, log, workers).catch((err: unknown) => {
          if (!(err instanceof WorkerStartError)) throw err;
          process.stderr.write(`${err.message}\n`);
          process.exit(err.exitCode);
        });
        onShutdown(log, () => primary.stop());
        return;
      }
      if (cluster.isWorker) joinEdgeCluster();
      const edge = await startOrExit(() => startEdge(config, log));
      log.info({ port: edge.port, host: config.http.host, pid: process.pid }, "edge listening");
      onShutdown(log, () => edge.stop());
    });

  program
    .command("sink")
    .description("JetStream -> ClickHouse writer with exactly-once dedup")
    .option(
      "--partitions <list>",
      "comma-separated bus partitions this process may lease (default: all); sinks share partitions through leases",
    )
    .addHelpText("after", envHelp)
    .action(async (opts: { partitions?: string }) => {
      const config = configOrExit();
      const log = createLogger("sink", config.logLevel);
      let partitions: number[] | undefined;
      if (opts.partitions !== undefined) {
        partitions = opts.partitions.split(",").map((s) => Number(s.trim()));
        if (partitions.some((p) => !Number.isInteger(p) || p < 0 || p >= config.nats.partitions)) {
          process.stderr.write(
            `--partitions: each must be an integer in [0, ${config.nats.partitions - 1}]\n`,
          );
          process.exit(2);
        }
      }
      const sink = await startOrExit(() => startSink(config, log, partitions));
      log.info({ metricsPort: sink.metricsPort }, "sink running");
      onShutdown(log, () => sink.stop());
      sink.sink.done().catch(() => process.exit(1));
    });

  program
    .command("migrate")
    .description("apply ClickHouse schema migrations and create the NATS streams (idempotent)")
    .addHelpText("after", envHelp)
    .action(async () => {
      const config = configOrExit();
      const log = createLogger("migrate", config.logLevel);
      const ch = createClickHouse(config.clickhouse);
      const applied = await migrate(ch, config.clickhouse.database, log);
      await ch.close();
      const nc = await connectNats(config, "tally-migrate");
      await startOrExit(async () => ensureStreams(await nc.jetstreamManager(), config));
      await nc.drain();
      log.info({ applied }, applied.length ? "migrations applied" : "schema already current");
    });
}
