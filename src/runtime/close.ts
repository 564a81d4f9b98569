import { DateTime } from "luxon";
import { openReconciler, type Reconciler } from "../accounting/reconcile-setup.js";
import { openJournalPoster } from "../accounting/index.js";
import { busNames, DeadLetterLog, ensureStreams, Watermarks } from "../bus/index.js";
import { closeDue, InvoiceStore, LeaderLease, usageSnapshotter, type CloseReport } from "../billing/index.js";
import { CatalogStore } from "../catalog/index.js";
import { openStripePusher } from "../connectors/stripe/index.js";
import { openXeroPusher, XeroDuePusher } from "../connectors/xero/index.js";
import { createClickHouse, isSchemaCurrent } from "../clickhouse/index.js";
import type { Config } from "../config/index.js";
import type { Logger } from "../observability/index.js";
import { RollupFiller } from "../usage/index.js";
import {
  evaluateThresholds,
  openWebhooks,
  reraiseFinalizedSince,
  startDispatcher,
  type ThresholdReport,
  type WebhookDispatcher,
  type Webhooks,
} from "../webhooks/index.js";
import { connectNats, warnIfNotHostCrashSafe } from "./connect.js";

/** ClickHouse request timeout of the rollup filler's statements (ms), at least. */
const rollupFillTimeoutMs = 600_000;

/** The delivery-log marker a close run holds while it runs (see runOnce). */
const closeRunMarker = "close_run";

/** A running close role. */
export interface RunningClose {
  /**
   * Runs one close now if this process is (or, within `waitMs`, becomes) the leader, and resolves
   * with what it did; null when another close process kept the lease.
   */
  runOnce(opts?: { dryRun?: boolean; waitMs?: number }): Promise<CloseReport | null>;
  invoices: InvoiceStore;
  catalog: CatalogStore;
  /** Resolves when the Xero push the last round started (if any) has finished. */
  xeroIdle(): Promise<void>;
  /** The outbox, endpoints and delivery log; `dispatcher` delivers them (every close process runs one). */
  webhooks: Webhooks;
  dispatcher: WebhookDispatcher;
  /** Evaluates usage alerts now (if this process holds the leader lease; else null). */
  evaluateThresholds(): Promise<ThresholdReport | null>;
  stop(): Promise<void>;
}

/**
 * Starts the close role: every `TALLY_CLOSE_INTERVAL_MS`, the process holding the leader lease
 * closes every subscription period that ended more than its grace period ago. `loop: false`
 * only connects (for `tally close --once` and tests).
 */
export async function startClose(config: Config, log: Logger, loop = true): Promise<RunningClose> {
  warnIfNotHostCrashSafe(config, log);
  const clickhouse = createClickHouse(config.clickhouse);
  if (!(await isSchemaCurrent(clickhouse, config.clickhouse.database))) {
    throw new Error(
      `ClickHouse database ${config.clickhouse.database} is not migrated; run 'tally migrate' first`,
    );
  }
  const nc = await connectNats(config, "tally-close");
  const jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, config);
  const js = nc.jetstream();
  const names = busNames(config.nats.prefix);
  await DeadLetterLog.open(js, names, config.nats.replicas);
  const watermarks = new Watermarks(jsm, names, config.nats.partitions, 200, log);
  const catalog = await CatalogStore.open(js, names.catalogBucket, config.nats.replicas, log);
  await catalog.start();
  const { crashAfterDrafts, crashAfterFinalized } = config.close;
  const die = () => process.kill(process.pid, "SIGKILL");
  const invoices = await InvoiceStore.open(js, names.invoicesBucket, config.nats.replicas, log, {
    // Fault injection for crash tests (TALLY_FAULT_CLOSE_CRASH_AFTER_*); off in production.
    ...(crashAfterDrafts > 0 ? { afterDraft: (n: number) => n === crashAfterDrafts && die() } : {}),
    ...(crashAfterFinalized > 0 ? { afterFinalized: (n: number) => n === crashAfterFinalized && die() } : {}),
  });
  const lease = await LeaderLease.open(
    js,
    names.closeBucket,
    config.close.leaseTtlMs,
    config.nats.replicas,
    log,
  );
  // Outbound webhooks: the close raises invoice.finalized, the push invoice.pushed/push_failed,
  // the threshold timer usage.threshold_crossed; the dispatcher delivers the outbox.
  const webhooks = await openWebhooks(js, jsm, config);
  const dispatcher = await startDispatcher(js, webhooks, config, log.child({ component: "webhooks" }));
  const deps = {
    webhooks: webhooks.emitter,
    catalog,
    invoices,
    snapshots: usageSnapshotter({ clickhouse, database: config.clickhouse.database, watermarks }),
    watermark: () => watermarks.current(),
    log,
    settings: {
      graceMs: config.close.graceMs,
      issuerPrefix: config.close.invoicePrefix,
      backfillDays: config.limits.backfillDays,
    },
  };

  // With TALLY_STRIPE_SECRET_KEY set, every close round is followed by a push of what it
  // finalized and of earlier failures whose backoff has passed; a push failure never fails the close.
  const pusher = await openStripePusher({ js, invoices, catalog, config, log, webhooks: webhooks.emitter });
  // Then the journal: entries for what was finalized and paid, and recognitions that are due.
  const poster = await openJournalPoster({ js, invoices, catalog, snapshots: deps.snapshots, config, log });
  // With TALLY_XERO_CLIENT_ID/_SECRET set, posted entries go to Xero as manual journals. Xero
  // allows 60 calls a minute, so a large backlog takes minutes: it runs beside the close rounds
  // (one push at a time), never inside them.
  // It reads the poster's journal store: one watch of the entry ids in the process, not two.
  const xero = await openXeroPusher({ js, config, log, journal: poster.journal, emitter: webhooks.emitter });
  const xeroDue =
    xero === null
      ? null
      : new XeroDuePusher({ journal: poster.journal, store: xero.store, pusher: xero.pusher, log });
  let xeroRunning: Promise<void> | null = null;
  const kickXero = () => {
    if (xeroDue === null || xeroRunning !== null || catalog.chart() === undefined) return;
    xeroRunning = xeroDue
      .pushDue()
      .then(
        (r) => (r.due > 0 || r.failed.length > 0) && log.info({ ...r, failed: r.failed.length }, "xero push"),
        (err: unknown) => log.error({ err }, "xero push failed; the next round retries"),
      )
      .then(() => {
        xeroRunning = null;
      });
  };

  // The looping close role reconciles the current and the previous month every
  // TALLY_RECONCILE_INTERVAL after a close round (so only while it holds the lease); each
  // difference raises `reconciliation.mismatch`. Opened at the first run, not at start.
  let reconciler: Reconciler | null = null;
  let reconciledAt = 0;
  let reconciling: Promise<void> = Promise.resolve();
  const reconcileDue = async () => {
    const every = config.reconcile.intervalMs;
    if (every === 0 || Date.now() - reconciledAt < every) return;
    reconciledAt = Date.now();
    reconciler ??= await openReconciler({ js, invoices, catalog, config, log, emitter: webhooks.emitter });
    // Months of the books: documents are dated in the accounting time zone.
    const now = DateTime.now().setZone(config.accounting.timezone);
    for (const m of [now.minus({ months: 1 }), now]) {
      await reconciler.run(m.toFormat("yyyy-MM")).catch((err: unknown) => {
        log.error({ err }, "reconciliation failed; the next interval retries");
      });
    }
  };

  let running: Promise<CloseReport | null> = Promise.resolve(null);
  const runOnce = (opts: { dryRun?: boolean; waitMs?: number } = {}) => {
    running = running.then(async () => {
      const deadline = Date.now() + (opts.waitMs ?? 0);
      while (!(await lease.acquireOrRenew())) {
        if (Date.now() >= deadline) return null;
        await new Promise((r) => setTimeout(r, 500));
      }
      const started = Date.now();
      // A close run leaves a marker while it runs: one still set at the start of the next run
      // means that run died, possibly between finalizing a batch and putting its
      // invoice.finalized events in the outbox; they are raised again after this run.
      const diedSince = opts.dryRun ? null : await webhooks.deliveries.marker(closeRunMarker);
      if (!opts.dryRun && diedSince === null)
        await webhooks.deliveries.setMarker(closeRunMarker, new Date(started).toISOString());
      const report = await closeDue(deps, Date.now(), opts);
      if (diedSince !== null) {
        const n = await reraiseFinalizedSince(invoices, webhooks.emitter, diedSince);
        log.warn({ since: diedSince, events: n }, "previous close run died; invoice.finalized raised again");
      }
      if (!opts.dryRun) await webhooks.deliveries.clearMarker(closeRunMarker);
      log.info(
        {
          finalized: report.finalized.length,
          waiting: report.waiting.length,
          errors: report.errors.length,
          ms: Date.now() - started,
        },
        opts.dryRun ? "close dry run" : "close run",
      );
      if (pusher !== null && !opts.dryRun) {
        await pusher.pushDue().then(
          (r) =>
            log.info(
              { pushed: r.pushed.length, failed: r.failed.length, mismatched: r.mismatched.length },
              "stripe push",
            ),
          (err: unknown) => log.error({ err }, "stripe push failed; the next round retries"),
        );
      }
      if (!opts.dryRun) {
        await poster.postDue().then(
          (r) => r.configured && log.info({ posted: r.posted, errors: r.errors.length }, "journal posted"),
          (err: unknown) => log.error({ err }, "journal posting failed; the next round retries"),
        );
        kickXero();
      }
      return report;
    });
    return running;
  };

  // Usage alerts: only the leader evaluates (each evaluation reads every alerting subscription's
  // usage); queued behind a running close so the two never read at once.
  const thresholds = (): Promise<ThresholdReport | null> => {
    const run = running.then(async () => {
      if (!(await lease.acquireOrRenew())) return null;
      const r = await evaluateThresholds(
        { close: deps, emitter: webhooks.emitter, deliveries: webhooks.deliveries },
        Date.now(),
      );
      if (r.fired.length > 0 || r.errors.length > 0)
        log.info({ evaluated: r.evaluated, fired: r.fired.length, errors: r.errors.length }, "usage alerts");
      return r;
    });
    running = run.then(
      () => null,
      () => null,
    );
    return run;
  };

  let timer: NodeJS.Timeout | null = null;
  let renew: NodeJS.Timeout | null = null;
  let filler: RollupFiller | null = null;
  let fillClient: ReturnType<typeof createClickHouse> | null = null;
  let alerts: NodeJS.Timeout | null = null;
  if (loop && config.webhooks.thresholdIntervalMs > 0) {
    alerts = setInterval(
      () => void thresholds().catch((err: unknown) => log.error({ err }, "usage alert evaluation failed")),
      config.webhooks.thresholdIntervalMs,
    );
  }
  if (loop) {
    const tick = () =>
      void runOnce()
        .then((report) => {
          if (report !== null) reconciling = reconciling.then(reconcileDue);
          return reconciling;
        })
        .catch((err: unknown) => log.error({ err }, "close run failed; will retry"));
    tick();
    timer = setInterval(tick, config.close.intervalMs);
    // Keep the lease while a long close runs (the tick renews it too).
    renew = setInterval(() => void lease.acquireOrRenew().catch(() => undefined), 5000);
    // One rollup filler per database: the leader's (a lost lease stops it between meters).
    if (config.rollup.intervalMs > 0) {
      // Its own client with a longer timeout: a fill unit's statement reads the `received`
      // column of every event of its type (measured ~38 s per unit at 100 M events on a busy
      // machine, above the 30 s default), and a statement cut by the client is filled again.
      fillClient = createClickHouse({
        ...config.clickhouse,
        timeoutMs: Math.max(config.clickhouse.timeoutMs, rollupFillTimeoutMs),
      });
      const usage = { clickhouse: fillClient, database: config.clickhouse.database, watermarks };
      filler = new RollupFiller(
        usage,
        () => catalog.list(),
        log,
        config.rollup.intervalMs,
        undefined,
        () => lease.held(),
      );
      filler.start();
    }
  }
  return {
    runOnce,
    invoices,
    catalog,
    xeroIdle: async () => {
      await xeroRunning;
    },
    webhooks,
    dispatcher,
    evaluateThresholds: thresholds,
    async stop() {
      if (timer) clearInterval(timer);
      if (renew) clearInterval(renew);
      await filler?.stop();
      if (alerts) clearInterval(alerts);
      await running.catch(() => undefined);
      await reconciling.catch(() => undefined);
      reconciler?.stop();
      // The Xero push reads the poster's journal: stop it first.
      await xeroRunning;
      xeroDue?.stop();
      await xero?.client.close();
      poster.stop();
      await dispatcher.stop();
      webhooks.endpoints.stop();
      await lease.release();
      await catalog.close();
      await nc.drain();
      await clickhouse.close();
      await fillClient?.close();
    },
  };
}
