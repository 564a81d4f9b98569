import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { parseCatalogDocument } from "../../catalog/index.js";
import { createClickHouse, migrate } from "../../clickhouse/index.js";
import { clickHouseReadUser, startClickHouse, startNats } from "../../dev/servers.js";
import { createLogger } from "../../observability/index.js";
import { startEdge } from "../../runtime/edge.js";
import { startClose } from "../../runtime/close.js";
import { startSink } from "../../runtime/sink.js";
import { configOrExit } from "../config.js";
import { onShutdown } from "./serve.js";

/** The example catalog shipped with Tally (repo root/examples; this file runs from dist/src/cli/commands). */
const exampleCatalog = fileURLToPath(new URL("../../../../examples/plan.yaml", import.meta.url));

export function registerDevCommand(program: Command): void {
  program
    .command("dev")
    .description(
      "local stack: starts nats-server and clickhouse-server (data under TALLY_DATA_DIR), migrates, runs edge + sink on 127.0.0.1",
    )
    .addHelpText(
      "after",
      "\nEnvironment: TALLY_HTTP_PORT (default 8787), TALLY_DATA_DIR (default .tally), TALLY_DEV_KEY (admin key, default tally_dev_admin_key_change_me).",
    )
    .action(async () => {
      const base = configOrExit();
      const log = createLogger("dev", base.logLevel);
      // Detached: Ctrl-C reaches only us, so we can drain edge and sink before stopping the servers.
      const [nats, clickhouse] = await Promise.all([
        startNats({ dataDir: base.dataDir, detached: true }),
        startClickHouse({ dataDir: base.dataDir, detached: true }),
      ]);
      // Whatever way this process ends, the servers it started end with it.
      process.once("exit", () => {
        nats.process.kill("SIGTERM");
        clickhouse.process.kill("SIGTERM");
      });
      const config = configOrExit({
        TALLY_NATS_URL: nats.url,
        TALLY_CLICKHOUSE_URL: clickhouse.url,
        TALLY_CLICKHOUSE_READ_USER: clickHouseReadUser,
        TALLY_HTTP_HOST: "127.0.0.1",
        TALLY_DEV_MODE: "true",
        TALLY_SINK_METRICS_PORT: "0",
      });
      const ch = createClickHouse(config.clickhouse);
      await migrate(ch, config.clickhouse.database, log);
      await ch.close();
      const edge = await startEdge(config, log.child({ role: "edge" }));
      const sink = await startSink(config, log.child({ role: "sink" }));
      const close = await startClose(config, log.child({ role: "close" }));
      onShutdown(log, async () => {
        await close.stop();
        await edge.stop();
        await sink.stop();
        await Promise.all([nats.stop(), clickhouse.stop()]);
      });
      const url = `http://127.0.0.1:${edge.port}`;
      const now = new Date().toISOString();
      // A first run gets the example meters, so usage and the portal show something at once.
      if (edge.catalog.list().length === 0) {
        const text = readFileSync(exampleCatalog, "utf8");
        const applied = await edge.catalog.applyDocument(parseCatalogDocument(text, edge.catalog.lookup()));
        log.info(
          { meters: applied.meters.map((a) => a.key), plans: applied.plans.map((a) => a.key) },
          "applied the example catalog (examples/plan.yaml)",
        );
      }
      const portal = edge.portalTokens.issue("acme", 7 * 24 * 3600).token;
      process.stderr.write(
        [
          "",
          `Tally dev stack is up (data in ${config.dataDir}).`,
          `  edge         ${url}   (admin key: TALLY_DEV_KEY)`,
          `  sink metrics http://127.0.0.1:${sink.metricsPort}/metrics`,
          `  nats         ${nats.url}`,
          `  clickhouse   ${clickhouse.url}   (database ${config.clickhouse.database})`,
          "",
          "Send an event:",
          `  curl -sS -X POST ${url}/v1/events -H 'Authorization: Bearer ${config.devKey}' -H 'Content-Type: application/json' \\`,
          `    -d '{"id":"evt-1","type":"api_call","customer":"acme","time":"${now}","properties":{"tokens":"12.5"}}'`,
          "Did it arrive?",
          `  curl -sS '${url}/v1/events/count?customer=acme' -H 'Authorization: Bearer ${config.devKey}'`,
          `  curl -sS '${url}/v1/events?customer=acme&limit=10' -H 'Authorization: Bearer ${config.devKey}'`,
          "Usage (meters from examples/plan.yaml; change them with: tally catalog apply <file>):",
          `  curl -sS '${url}/v1/usage?meter=api_calls&customer=acme&window=day' -H 'Authorization: Bearer ${config.devKey}'`,
          `  curl -sSN '${url}/v1/usage/stream?meter=api_calls&customer=acme' -H 'Authorization: Bearer ${config.devKey}'`,
          "acme's usage page (valid 7 days):",
          `  ${url}/portal?token=${encodeURIComponent(portal)}`,
          "Health: " + `${url}/readyz` + "   Metrics: " + `${url}/metrics`,
          "Ctrl-C stops everything this command started; running it again reuses the data.",
          "",
        ].join("\n"),
      );
    });
}
