import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, it, expect, vi } from "vitest";
import { Command } from "commander";
import { registerRateCommand } from "../src/cli/commands/rate.js";
import type { RatedInvoice } from "../src/rating/index.js";

/* End-to-end runs of `tally rate` through commander, with real files (no servers needed). */

const dir = mkdtempSync(join(tmpdir(), "tally-rate-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function run(args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  let stdout = "";
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  const previous = process.exitCode;
  process.exitCode = 0;
  try {
    const program = new Command("tally").exitOverride();
    registerRateCommand(program);
    await program.parseAsync(["rate", ...args], { from: "user" });
    return { stdout, stderr, exitCode: Number(process.exitCode ?? 0) };
  } finally {
    process.exitCode = previous;
    out.mockRestore();
    err.mockRestore();
  }
}

describe("tally rate", () => {
  it("prices the shipped example and prints JSON with integer minor units", async () => {
    const { stdout, exitCode } = await run([
      "--plan",
      "examples/plan.yaml",
      "--usage",
      "examples/usage.json",
      "--period-start",
      "2026-11-01T00:00:00Z",
      "--subscription-start",
      "2026-03-01T00:00:00Z",
      "--seats",
      "12",
    ]);
    expect(exitCode).toBe(0);
    const invoice = JSON.parse(stdout) as RatedInvoice;
    expect(invoice.period).toEqual({ start: "2026-11-01T00:00:00.000Z", end: "2026-12-01T00:00:00.000Z" });
    expect(invoice.lines.map((l) => [l.price, l.amount])).toEqual([
      ["platform", 49900],
      ["platform", -9980], // 20% launch discount, month 9 of 12
      ["seats", 18000],
      ["api_calls", 215000], // 11.5M billable: 10M × 0.02 + 1.5M × 0.01
      ["storage", 90], // 6600.5 × 0.0137 = 90.42685
      ["emails", 3920], // 49 started packages of 1,000 × 80
      ["active_users", 21605], // 4,321 × 5 (volume tier 2)
    ]);
    expect(invoice).toMatchObject({ currency: "USD", subtotal: 298535, total: 298535 });
  });

  it("follows a subscription file with a seat change and a plan change", async () => {
    const catalog = file(
      "catalog.yaml",
      `
meters: [{ key: api_calls }]
plans:
  - key: starter
    currency: eur
    prices:
      - { key: base, type: flat, unit_amount: 3000 }
      - { key: seats, type: seat, unit_amount: 1000 }
      - { key: api, type: metered, meter: api_calls, unit_amount_decimal: "0.1" }
  - key: pro
    currency: eur
    prices:
      - { key: base, type: flat, unit_amount: 9000 }
      - { key: seats, type: seat, unit_amount: 800 }
      - { key: api, type: metered, meter: api_calls, unit_amount_decimal: "0.05" }
`,
    );
    const subscription = file(
      "subscription.json",
      JSON.stringify({
        plan: "starter",
        started_at: "2026-01-01T00:00:00Z",
        seats: 3,
        changes: [
          { at: "2026-11-11T00:00:00Z", seats: 6 },
          { at: "2026-11-21T00:00:00Z", plan: "pro", usage: { api_calls: 30000 } },
        ],
      }),
    );
    const usage = file("usage.json", '{ "api_calls": 10000 }');
    const { stdout, stderr, exitCode } = await run([
      "--plan",
      catalog,
      "--usage",
      usage,
      "--subscription",
      subscription,
      "--period-start",
      "2026-11-01T00:00:00Z",
      "--compact",
    ]);
    expect(stderr).toBe("");
    expect(exitCode).toBe(0);
    const invoice = JSON.parse(stdout) as RatedInvoice;
    expect(invoice.lines.map((l) => [l.plan, l.price, l.quantity, l.amount])).toEqual([
      ["starter", "base", "1", 2000], // 3000 × 20/30
      ["starter", "seats", "3", 1000], // 3 × 1000 × 10/30
      ["starter", "seats", "6", 2000], // 6 × 1000 × 10/30
      ["starter", "api", "10000", 1000],
      ["pro", "base", "1", 3000], // 9000 × 10/30
      ["pro", "seats", "6", 1600], // 6 × 800 × 10/30
      ["pro", "api", "30000", 1500],
    ]);
    expect(invoice).toMatchObject({ currency: "EUR", total: 12100 });
  });

  it("names the file and field of bad input on stderr and exits 1", async () => {
    const usage = file("bad-usage.json", '{ "api_callz": 5 }');
    const { stdout, stderr, exitCode } = await run([
      "--plan",
      "examples/plan.yaml",
      "--usage",
      usage,
      "--period-start",
      "2026-11-01T00:00:00Z",
      "--subscription-start",
      "2026-03-01T00:00:00Z",
      "--seats",
      "1.5",
    ]);
    expect(exitCode).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe(
      [
        "tally rate: invalid input",
        '  --seats (or "seats" in the subscription file): must be a non-negative integer seat count',
        `  ${usage}: api_callz: no metered price of plan growth uses this meter`,
        "",
      ].join("\n"),
    );
  });

  it("reports the exact path of a bad plan field", async () => {
    const plan = file(
      "bad-plan.yaml",
      `plans:
  - key: p
    currency: usd
    prices:
      - key: api
        type: metered
        meter: api_calls
        billing_scheme: tiered
        tiers_mode: graduated
        tiers:
          - { up_to: 1000, unit_amount: 0 }
          - { up_to: 1000, unit_amount: 1 }
          - { up_to: inf, unit_amount: 1 }
`,
    );
    const { stderr, exitCode } = await run(["--plan", plan, "--usage", "examples/usage.json"]);
    expect(exitCode).toBe(1);
    expect(stderr).toContain(
      `${plan}: plans[0].prices[0].tiers[1].up_to: must be greater than the previous tier's up_to (1000)`,
    );
  });
});
