/**
 * Rating benchmark: N customers (default 100,000) × 5 metered prices on one plan, rated with the same
 * `rate()` the close job uses. Prints a table and, as its last line, one JSON object.
 *
 *   npm run bench -- rating [--customers 100000] [--runs 2]
 *
 * Usage is generated up front from a fixed seed (not timed). Each run rates every customer; CPU time is
 * process.cpuUsage() (user + system, so it includes the GC's helper threads) around the rating loop,
 * wall time is performance.now(). Run 1 is cold (includes JIT warm-up); later runs show the steady
 * state, summarized as the best and the median CPU time of runs 2..N.
 */
import { performance } from "node:perf_hooks";
import { billingPeriod, compilePlan, rate } from "../src/rating/index.js";
import type { PlanInput, UsageInput } from "../src/rating/index.js";

const PLAN: PlanInput = {
  key: "bench",
  currency: "usd",
  prices: [
    {
      key: "api_calls",
      type: "metered",
      meter: "api_calls",
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      tiers: [
        { up_to: "10000", unit_amount: "0" },
        { up_to: "1000000", unit_amount_decimal: "0.05" },
        { up_to: "10000000", unit_amount_decimal: "0.03" },
        { up_to: "inf", unit_amount_decimal: "0.0125" },
      ],
    },
    {
      key: "seats_active",
      type: "metered",
      meter: "active_users",
      billing_scheme: "tiered",
      tiers_mode: "volume",
      tiers: [
        { up_to: "100", unit_amount: "800", flat_amount: "0" },
        { up_to: "1000", unit_amount: "600", flat_amount: "5000" },
        { up_to: "inf", unit_amount: "400", flat_amount: "50000" },
      ],
    },
    {
      key: "emails",
      type: "metered",
      meter: "emails",
      unit_amount: "100",
      transform_quantity: { divide_by: "1000", round: "up" },
    },
    {
      key: "storage",
      type: "metered",
      meter: "storage_gb_hours",
      unit_amount_decimal: "0.0137",
      included_quantity: "720",
    },
    {
      key: "compute",
      type: "metered",
      meter: "compute_seconds",
      billing_scheme: "tiered",
      tiers_mode: "graduated",
      included_quantity: "3600",
      tiers: [
        { up_to: "36000", unit_amount_decimal: "0.012", flat_amount: "100" },
        { up_to: "inf", unit_amount_decimal: "0.009" },
      ],
    },
  ],
};

const PERIOD_START = "2026-11-01T00:00:00Z";
const PERIOD_END = "2026-12-01T00:00:00Z";

/** mulberry32: a small deterministic PRNG (integer ops only), so every run rates the same usage. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function generateUsage(customers: number): UsageInput[] {
  const next = prng(42);
  const out: UsageInput[] = [];
  for (let i = 0; i < customers; i++) {
    const storageWhole = next() % 50_000;
    const storageFrac = String(next() % 1000).padStart(3, "0");
    out.push({
      api_calls: String(next() % 25_000_000),
      active_users: String(next() % 3_000),
      emails: String(next() % 500_000),
      storage_gb_hours: `${storageWhole}.${storageFrac}`,
      compute_seconds: String(next() % 200_000),
    });
  }
  return out;
}

interface RunResult {
  cpuMs: number;
  wallMs: number;
  lines: number;
  totalMinor: bigint;
}

function runOnce(usages: readonly UsageInput[]): RunResult {
  // What a close job does: compile the plan and parse the period once, then rate every customer.
  const plan = compilePlan(PLAN);
  const period = billingPeriod(PERIOD_START, PERIOD_END);
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  let lines = 0;
  let totalMinor = 0n;
  for (const usage of usages) {
    const invoice = rate({ plan, period, usage });
    lines += invoice.lines.length;
    totalMinor += BigInt(invoice.total);
  }
  const wallMs = performance.now() - wall0;
  const cpu = process.cpuUsage(cpu0);
  return { cpuMs: (cpu.user + cpu.system) / 1000, wallMs, lines, totalMinor };
}

function flag(args: readonly string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const raw = i === -1 ? undefined : args[i + 1];
  if (raw === undefined) return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Entry point called by bench/run.ts with the arguments after the bench name. */
export async function main(args: string[]): Promise<void> {
  const customers = flag(args, "customers", 100_000);
  const runs = flag(args, "runs", 2);
  const usages = generateUsage(customers);
  const results: RunResult[] = [];
  for (let r = 0; r < runs; r++) {
    results.push(runOnce(usages));
    // Let a pending GC or timer run between runs, outside the measured loop.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const first = results[0]!;
  const best = results.reduce((a, b) => (b.cpuMs < a.cpuMs ? b : a));
  const steady = results.length > 1 ? results.slice(1) : results;
  const steadyMedianCpuMs = median(steady.map((r) => r.cpuMs));
  if (results.some((r) => r.totalMinor !== first.totalMinor || r.lines !== first.lines)) {
    throw new Error("runs disagree: rating is not deterministic");
  }

  console.log(
    `rating: ${customers} customers × ${PLAN.prices.length} metered prices (${first.lines} lines per run)`,
  );
  console.log("run  cpu_ms   wall_ms  lines/s (cpu)");
  results.forEach((r, i) => {
    const perSec = Math.round(r.lines / (r.cpuMs / 1000));
    console.log(
      `${String(i + 1).padEnd(4)} ${r.cpuMs.toFixed(0).padStart(6)}  ${r.wallMs.toFixed(0).padStart(7)}  ${perSec}`,
    );
  });
  console.log(
    `steady state (runs ${results.length > 1 ? `2..${runs}` : "1"}): best ${best.cpuMs.toFixed(0)} ms CPU, median ${steadyMedianCpuMs.toFixed(0)} ms CPU`,
  );
  console.log(`sum of invoice totals: ${first.totalMinor} minor units (checksum)`);
  console.log(
    JSON.stringify({
      bench: "rating",
      customers,
      prices_per_customer: PLAN.prices.length,
      lines: first.lines,
      cpu_ms: Math.round(first.cpuMs),
      wall_ms: Math.round(first.wallMs),
      lines_per_s: Math.round(first.lines / (first.cpuMs / 1000)),
      best_cpu_ms: Math.round(best.cpuMs),
      best_wall_ms: Math.round(best.wallMs),
      steady_median_cpu_ms: Math.round(steadyMedianCpuMs),
      runs,
      node: process.version,
    }),
  );
}
