/**
 * Options shared by the data benchmarks' command lines (`--events 100000000`, `--keep-data <dir>`).
 */
import { resolve } from "node:path";

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
