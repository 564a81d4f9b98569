#!/usr/bin/env node
import { Command } from "commander";
import { createLogger } from "../observability/index.js";
import { registerCatalogCommand } from "./commands/catalog.js";
import { registerCloseCommand } from "./commands/close.js";
import { registerDevCommand } from "./commands/dev.js";
import { registerDlqCommand } from "./commands/dlq.js";
import { registerInvoicesCommand } from "./commands/invoices.js";
import { registerJournalsCommand } from "./commands/journals.js";
import { registerKeysCommand } from "./commands/keys.js";
import { registerPushCommand } from "./commands/push.js";
import { registerRateCommand } from "./commands/rate.js";
import { registerReconcileCommand } from "./commands/reconcile.js";
import { registerRevenueCommand } from "./commands/revenue.js";
import { registerServeCommands } from "./commands/serve.js";

const program = new Command("tally")
  .description("Tally: usage metering and billing integration (edge, sink, migrations, local stack)")
  .showHelpAfterError();
registerServeCommands(program);
registerDevCommand(program);
registerDlqCommand(program);
registerKeysCommand(program);
registerCatalogCommand(program);
registerRateCommand(program);
registerCloseCommand(program);
registerInvoicesCommand(program);
registerPushCommand(program);
registerReconcileCommand(program);
registerJournalsCommand(program);
registerRevenueCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  createLogger("cli", "error").fatal({ err }, "command failed");
  process.exitCode = 1;
});
