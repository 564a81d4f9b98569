/**
 * Options shared by the data benchmarks' command lines (`--events 100000000`, `--keep-data <dir>`).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import type { Cleanup } from "./children.js";

/** `--<name> <integer>`: the value, or `fallback` when absent. @throws Error when not an integer ≥ `min`. */
export function intArg(args: readonly string[], name: string, fallback: number, min: number): number {
  const i = args.indexOf(`--${name}`);
  if (i === -1) return fallback;
  const n = Number(args[i + 1]);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
  return n;
}

/** `--keep-data <dir>` as an absolute path, or null when absent. @throws Error when the directory is missing. */
export function keepDataArg(args: readonly string[]): string | null {
  const k = args.indexOf("--keep-data");
  const keepData = k === -1 ? null : (args[k + 1] ?? "");
  if (keepData === "" || keepData?.startsWith("--")) throw new Error("--keep-data needs a directory");
  return keepData === null ? null : resolve(keepData);
}

/**
 * A data benchmark's data dir: the `--keep-data` directory (created when missing, kept
 * afterwards; `existed` says whether it was there before) or a temp dir `tally-bench-<name>-*`
 * that `cleanup` removes.
 */
export function benchDataDir(
  keepData: string | null,
  name: string,
  cleanup: Cleanup,
): { dir: string; existed: boolean } {
  if (keepData !== null) {
    const existed = existsSync(join(keepData, "clickhouse"));
    mkdirSync(keepData, { recursive: true });
    return { dir: keepData, existed };
  }
  const dir = mkdtempSync(join(os.tmpdir(), `tally-bench-${name}-`));
  cleanup.add("remove temp dir", () => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  return { dir, existed: false };
}
