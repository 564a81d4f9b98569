import { Counter, Gauge, Histogram } from "prom-client";
import { registry } from "../observability/index.js";

export const sinkMetrics = {
  batchRows: new Histogram({
    name: "tally_sink_batch_rows",
    help: "Events per sink flush (before dedup)",
    buckets: [1, 10, 100, 1000, 5000, 10000, 20000, 50000],
    registers: [registry],
  }),
  flushSeconds: new Histogram({
    name: "tally_sink_flush_seconds",
    help: "Time for one flush: ledger lookup, inserts, acks",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  }),
  inserted: new Counter({
    name: "tally_sink_events_inserted_total",
    help: "Events written to ClickHouse",
    registers: [registry],
  }),
  duplicates: new Counter({
    name: "tally_sink_duplicates_total",
    help: "Events dropped as duplicates by id",
    registers: [registry],
  }),
  rewrites: new Counter({
    name: "tally_sink_rewrites_total",
    help: "Ledgered events whose row was missing, written again with a rewrite record (crash between ledger and events insert)",
    registers: [registry],
  }),
  insertStatements: new Counter({
    name: "tally_sink_insert_statements_total",
    help: "Insert statements sent to ClickHouse (ledger, rewrite records, events); shared by the partitions flushing in the same tick",
    registers: [registry],
  }),
  insertGroupWorkers: new Histogram({
    name: "tally_sink_insert_group_workers",
    help: "Partition writes whose rows went out in one shared set of insert statements",
    buckets: [1, 2, 3, 4, 6, 8, 16, 32],
    registers: [registry],
  }),
  statementErrors: new Counter({
    name: "tally_sink_statement_errors_total",
    help: "Failed sink statements, retried (stage: lookup|insert; code: ClickHouse error code or none). Any with a code: alert",
    labelNames: ["stage", "code"] as const,
    registers: [registry],
  }),
  leases: new Gauge({
    name: "tally_sink_partitions_leased",
    help: "Bus partitions this sink holds a lease on",
    registers: [registry],
  }),
  leaseLosses: new Counter({
    name: "tally_sink_lease_losses_total",
    help: "Partition workers stopped because their lease could not be renewed in time (reason: expired|lost)",
    labelNames: ["reason"] as const,
    registers: [registry],
  }),
  retries: new Counter({
    name: "tally_sink_insert_retries_total",
    help: "Retried ClickHouse operations after a retriable error",
    registers: [registry],
  }),
  deadLettered: new Counter({
    name: "tally_sink_dead_lettered_total",
    help: "Bus messages moved to the dead-letter stream",
    labelNames: ["reason"] as const,
    registers: [registry],
  }),
  inflightWaits: new Counter({
    name: "tally_sink_inflight_waits_total",
    help: "Flushes that waited for a free insert slot (backpressure)",
    registers: [registry],
  }),
  lag: new Gauge({
    name: "tally_sink_lag_messages",
    help: "Bus messages not yet written, per partition (pending + unacked)",
    labelNames: ["partition"] as const,
    registers: [registry],
  }),
  filterSkipped: new Counter({
    name: "tally_sink_filter_skipped_ids_total",
    help: "Ids the dedup Bloom filter ruled out (not looked up in the ledger)",
    registers: [registry],
  }),
  filterAsked: new Counter({
    name: "tally_sink_ledger_looked_up_ids_total",
    help: "Ids looked up in the ClickHouse dedup ledger (filter off, still building, or possibly seen)",
    registers: [registry],
  }),
  filterBuildSeconds: new Histogram({
    name: "tally_sink_filter_build_seconds",
    help: "Time to build a partition's dedup Bloom filter from the ledger",
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [registry],
  }),
  filterBytes: new Gauge({
    name: "tally_sink_filter_bytes",
    help: "Memory of each leased partition's dedup Bloom filter",
    labelNames: ["partition"] as const,
    registers: [registry],
  }),
};
