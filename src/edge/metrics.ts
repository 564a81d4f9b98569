import { Counter } from "prom-client";
import { registry } from "../observability/index.js";

const rejected = new Counter({
  name: "tally_events_rejected_total",
  help: "Events rejected at ingest, by reason code",
  labelNames: ["reason"] as const,
  registers: [registry],
});
const accepted = new Counter({
  name: "tally_events_accepted_total",
  help: "Events durably accepted (202) at ingest",
  registers: [registry],
});

export function countRejected(reason: string, n: number): void {
  rejected.inc({ reason }, n);
}
export function countAccepted(n: number): void {
  accepted.inc(n);
}
