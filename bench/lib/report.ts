/**
 * What every benchmark's report shares: the machine it ran on (with the git state of `src/`),
 * progress lines on stderr, and the number/table formatting of the human table.
 */
import { execFileSync } from "node:child_process";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { round } from "./proc.js";

/** The repository root (this file runs from dist/bench/lib). */
const repo = join(dirname(fileURLToPath(import.meta.url)), "../../..");

/** Short HEAD, marked when `src/` has uncommitted changes; "unknown" outside a git checkout. */
function gitDescribe(): string {
  try {
    const head = execFileSync("git", ["-C", repo, "rev-parse", "--short", "HEAD"], {
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["-C", repo, "status", "--porcelain", "--", "src"], {
      encoding: "utf8",
    }).trim();
    return dirty === "" ? head : `${head} (+ uncommitted changes in src/)`;
  } catch {
    return "unknown";
  }
}

/** Git state, cores, CPU model, memory, OS and Node version of this machine. */
export function machineBase() {
  return {
    git: gitDescribe(),
    cores: os.cpus().length,
    cpu_model: os.cpus()[0]?.model ?? "unknown",
    memory_gib: round(os.totalmem() / 1024 ** 3, 1),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

/** A progress printer: `[name hh:mm:ss] message` on stderr (stdout holds the report). */
export function progressLog(name: string): (msg: string) => void {
  return (msg) => process.stderr.write(`[${name} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** A number for the table, with thousands separators; "-" when missing. */
export function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Aligned columns: the first `textColumns` left-aligned, the rest (numbers) right-aligned. */
export function table(rows: string[][], textColumns = 1): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) => r.map((c, i) => (i < textColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
    .join("\n");
}
