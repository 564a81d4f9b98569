import type { Logger } from "../observability/index.js";
import type { ClickHouseClient } from "./client.js";
import { latestSchemaVersion, migrations, sql } from "./sql.js";

/**
 * Applies pending migrations. Safe to run concurrently and repeatedly: every statement is
 * `IF NOT EXISTS`, and a version is recorded only after its statements succeeded.
 * @returns the versions applied by this call.
 */
export async function migrate(ch: ClickHouseClient, db: string, log?: Logger): Promise<number[]> {
  await ch.command({ query: sql.createDatabase(db) });
  await ch.command({ query: sql.createMigrationsTable(db) });
  const applied = new Set(
    (await queryRows<{ version: number }>(ch, sql.appliedVersions(db))).map((r) => Number(r.version)),
  );
  const done: number[] = [];
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    for (const statement of m.statements(db)) await ch.command({ query: statement });
    await ch.command({ query: sql.recordMigration(db, m) });
    log?.info({ version: m.version, name: m.name }, "migration applied");
    done.push(m.version);
  }
  return done;
}

/** The newest applied schema version, or 0 when the database or table does not exist. */
export async function schemaVersion(ch: ClickHouseClient, db: string): Promise<number> {
  try {
    const rows = await queryRows<{ version: number | string }>(ch, sql.schemaVersion(db));
    return Number(rows[0]?.version ?? 0);
  } catch {
    return 0;
  }
}

export async function isSchemaCurrent(ch: ClickHouseClient, db: string): Promise<boolean> {
  return (await schemaVersion(ch, db)) >= latestSchemaVersion;
}

/** Runs a SELECT and returns its rows. */
export async function queryRows<T>(ch: ClickHouseClient, query: string): Promise<T[]> {
  const rs = await ch.query({ query, format: "JSONEachRow" });
  return rs.json<T>();
}
