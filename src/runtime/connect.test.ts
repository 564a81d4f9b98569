import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/index.js";
import type { Logger } from "../observability/index.js";
import { warnIfNotHostCrashSafe } from "./connect.js";

/** A logger that records its warnings (pino's interface, only `warn` is used). */
function recorder() {
  const warnings: { obj: unknown; msg: string }[] = [];
  const log = { warn: (obj: unknown, msg: string) => warnings.push({ obj, msg }) } as unknown as Logger;
  return { log, warnings };
}

describe("warnIfNotHostCrashSafe", () => {
  it("warns once per process outside dev mode while streams have fewer than 3 replicas", () => {
    const dev = recorder();
    warnIfNotHostCrashSafe(loadConfig({ TALLY_DEV_MODE: "true" }), dev.log);
    expect(dev.warnings).toEqual([]);
    const r3 = recorder();
    warnIfNotHostCrashSafe(loadConfig({ TALLY_STREAM_REPLICAS: "3" }), r3.log);
    expect(r3.warnings).toEqual([]);

    const r1 = recorder();
    const defaults = loadConfig({});
    expect(defaults.nats.replicas).toBe(1);
    expect(warnIfNotHostCrashSafe(defaults, r1.log)).toBe(true);
    expect(r1.warnings).toHaveLength(1);
    expect(r1.warnings[0]!.obj).toEqual({ replicas: 1 });
    expect(r1.warnings[0]!.msg).toMatch(/host.*can lose events already acknowledged/i);
    // Once: an edge and a sink in one process (or a restarted component) do not repeat it.
    expect(warnIfNotHostCrashSafe(defaults, r1.log)).toBe(false);
    expect(r1.warnings).toHaveLength(1);
  });
});
