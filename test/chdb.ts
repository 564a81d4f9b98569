import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as ChdbModule from "chdb";

/**
 * Current ClickHouse (26.x), embedded through the `chdb` package, for the compat test that runs
 * Tally's DDL and queries on both the Debian 18.16 server and a current engine.
 */
export interface Chdb {
  /** The engine's `version()`, e.g. `26.7.2.1`. */
  version: string;
  /** Runs a statement that returns nothing (DDL, INSERT). */
  exec(query: string): Promise<void>;
  /** Runs a SELECT and returns its rows (JSONEachRow). */
  rows<T>(query: string): Promise<T[]>;
  /** Closes the session and removes its data directory. */
  close(): void;
}

/**
 * Opens a chdb session on a fresh temporary directory, so DDL and inserts persist across queries.
 * Throws one clear error when the native engine cannot load on this machine.
 */
export async function openChdb(): Promise<Chdb> {
  let mod: typeof ChdbModule;
  try {
    mod = await import("chdb");
  } catch (err) {
    throw new Error(`chdb (embedded ClickHouse 26) cannot load on this machine: ${String(err)}`, {
      cause: err,
    });
  }
  const dir = mkdtempSync(join(tmpdir(), "tally-chdb-"));
  const session = new mod.Session(dir);
  const rows = async <T>(query: string): Promise<T[]> => {
    const text = (await session.queryAsync(query, { format: "JSONEachRow" })).text();
    return text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as T);
  };
  const [v] = await rows<{ v: string }>("SELECT version() AS v");
  return {
    version: v!.v,
    exec: async (query) => {
      await session.queryAsync(query, { format: "JSONEachRow" });
    },
    rows,
    close: () => {
      session.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
