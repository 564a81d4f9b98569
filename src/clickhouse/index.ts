export { createClickHouse, isPermanentInsertError, clickHouseErrorCode } from "./client.js";
export type { ClickHouseClient } from "./client.js";
export { migrate, schemaVersion, isSchemaCurrent, queryRows } from "./migrate.js";
export { sql, lit, ident, migrations, latestSchemaVersion } from "./sql.js";
export type { SqlValue, Migration, EventFilter } from "./sql.js";
