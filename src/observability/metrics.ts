import { Registry, collectDefaultMetrics } from "prom-client";

/**
 * One registry per process. Metrics are declared next to the code they measure and
 * registered here, with low-cardinality labels only (partition, reason, outcome).
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry });
