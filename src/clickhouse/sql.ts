/**
 * Every SQL statement Tally runs lives in this module. Values reach SQL only through
 * {@link lit}; identifiers only through {@link ident}, which validates instead of escaping.
 *
 * Dialect: the common subset of ClickHouse 18.16 (Debian) and 26.x: no query parameters,
 * no DateTime64, no Map, no TTL. Event time is `ts Int64` epoch milliseconds, UTC.
 */

/** A value that can be rendered as a ClickHouse literal. */
export type SqlValue = string | number | bigint | boolean | null | readonly SqlValue[];

const identPattern = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** Renders an identifier (database, table). Throws on anything but `[A-Za-z_][A-Za-z0-9_]*`. */
export function ident(name: string): string {
  if (!identPattern.test(name)) throw new Error(`invalid SQL identifier: ${JSON.stringify(name)}`);
  return `\`${name}\``;
}

const escapes: Record<string, string> = {
  "\\": "\\\\",
  "'": "\\'",
  "\0": "\\0",
  "\b": "\\b",
  "\f": "\\f",
  "\r": "\\r",
  "\n": "\\n",
  "\t": "\\t",
  "\v": "\\v",
  "\x07": "\\a",
};

/**
 * The single literal-escaping function. Strings are quoted with backslash escapes for `\`, `'`
 * and control characters (other control bytes as `\xHH`); numbers must be finite; arrays recurse.
 */
export function lit(v: SqlValue): string {
  if (v === null) return "NULL";
  switch (typeof v) {
    case "string":
      // eslint-disable-next-line no-control-regex
      return `'${v.replace(/[\\'\x00-\x1f\x7f]/g, (c) => escapes[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)}'`;
    case "number":
      if (!Number.isFinite(v)) throw new Error(`cannot render non-finite number ${v} as SQL`);
      return String(v);
    case "bigint":
      return v.toString();
    case "boolean":
      return v ? "1" : "0";
    default:
      return `[${v.map(lit).join(", ")}]`;
  }
}

/**
 * Most bytes of literals in one `IN (...)` list. ClickHouse refuses a statement longer than
 * `max_query_size` (262,144 bytes by default) with a syntax error (code 62); ids of up to 256
 * characters, each escaped control character 4 bytes and each UTF-8 character up to 4, make a
 * count-only bound (2,000 ids) miss it. Half the limit leaves room for the rest of the statement.
 */
export const maxInListBytes = 128 * 1024;
/** Most values in one `IN (...)` list, whatever their size (bounds the server's hash set and parse time). */
export const maxInListItems = 2000;

/**
 * Joins rendered literals into `IN` lists of at most `maxBytes` UTF-8 bytes (separators
 * included) and `maxItems` items each. A single literal larger than `maxBytes` gets a list of
 * its own (cannot happen with Tally's length limits: 256 characters × 4 bytes < maxInListBytes).
 */
export function inLists(
  literals: readonly string[],
  maxBytes = maxInListBytes,
  maxItems = maxInListItems,
): string[] {
  return inListGroups(literals, (l) => l, maxBytes, maxItems).map((group) => group.join(","));
}

/**
 * Values grouped as {@link inLists} would list them once rendered by `render` (for callers
 * that pass values, not SQL text, to a statement builder that renders them).
 */
export function inListGroups<T>(
  values: readonly T[],
  render: (v: T) => string,
  maxBytes = maxInListBytes,
  maxItems = maxInListItems,
): T[][] {
  const groups: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const v of values) {
    const n = Buffer.byteLength(render(v), "utf8") + 1;
    if (cur.length > 0 && (bytes + n > maxBytes || cur.length >= maxItems)) {
      groups.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(v);
    bytes += n;
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}

/** The sort key of one event row. */
export interface EventKey {
  customer: string;
  type: string;
  ts: number;
  id: string;
}

/**
 * PREWHERE: ClickHouse reads the `id` column of the granules the primary key points at, and the
 * other columns only where an id matched. Nearly every id a flush looks up is new (no match), so
 * without it each lookup decompressed fp, customer, type and ts for every granule touched.
 */
function ledgerLookupIn(db: string, list: string): string {
  return `SELECT id, fp, customer, type, toString(ts) AS ts_ms FROM ${ident(db)}.event_ids PREWHERE ${list === "" ? "0" : `id IN (${list})`}`;
}

/** One versioned schema migration; every statement is idempotent. */
export interface Migration {
  version: number;
  name: string;
  statements: (db: string) => string[];
}

/** The schema, in order. Append only: never edit an applied migration. */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: "events and dedup ledger",
    statements: (db) => [
      `CREATE TABLE IF NOT EXISTS ${ident(db)}.events (
  customer String,
  type String,
  ts Int64,
  id String,
  received Int64,
  source String,
  prop_keys Array(String),
  prop_values Array(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000), 'UTC'))
ORDER BY (customer, type, ts, id)`,
      // The dedup ledger: one row per event id the sink accepted, kept for the dedup
      // retention (partitions by first-seen day are dropped after it).
      `CREATE TABLE IF NOT EXISTS ${ident(db)}.event_ids (
  id String,
  customer String,
  type String,
  ts Int64,
  fp String,
  bus_partition UInt16,
  seen_day Date
) ENGINE = ReplacingMergeTree
PARTITION BY seen_day
ORDER BY id
SETTINGS index_granularity = 1024`,
    ],
  },
  {
    version: 2,
    name: "rewrite records",
    statements: (db) => [
      // Ids the sink wrote a second, identical row for (crash recovery, ambiguous inserts),
      // recorded before the copy is written; the usage path collapses only these ids.
      // No backfill: versions 1 and 2 ship together in the first release, so no database
      // holds copies written without a record.
      `CREATE TABLE IF NOT EXISTS ${ident(db)}.event_rewrites (
  customer String,
  type String,
  ts Int64,
  id String,
  recorded_at DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(ts, 1000), 'UTC'))
ORDER BY (customer, type, ts, id)`,
    ],
  },
  {
    version: 3,
    name: "usage rollup",
    statements: (db) => [
      // Partial aggregates of one meter version per (customer, declared dimensions, 15-minute
      // event bucket `eb`, receive hour `rb`), written by usage/rollup.ts one fill unit at a
      // time (all events received in [r_from, r_to)), each fill tagged with its own `token`.
      // Plain MergeTree: rows are never merged into each other, so a fill is exactly its rows.
      `CREATE TABLE IF NOT EXISTS ${ident(db)}.usage_rollup (
  meter String,
  meter_version UInt32,
  token String,
  rb Int64,
  customer String,
  g0 String,
  g1 String,
  g2 String,
  g3 String,
  g4 String,
  eb Int64,
  n UInt64,
  ok UInt64,
  s Decimal128(9),
  mn Decimal128(9),
  mx Decimal128(9),
  l_ts Int64,
  l_id String,
  l_v String,
  uq AggregateFunction(uniqExact, String),
  d1 UInt64,
  d2 UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(eb, 1000), 'UTC'))
ORDER BY (meter, meter_version, customer, eb)`,
      // The fill ledger: a fill's rows count only once its row here is written, which happens
      // after its INSERT returned. A crashed fill leaves rows under a token never recorded.
      `CREATE TABLE IF NOT EXISTS ${ident(db)}.rollup_fills (
  meter String,
  meter_version UInt32,
  r_from Int64,
  r_to Int64,
  token String,
  filled_at DateTime
) ENGINE = MergeTree
ORDER BY (meter, meter_version, r_from)`,
    ],
  },
];

export const latestSchemaVersion = migrations[migrations.length - 1]!.version;

export const sql = {
  createDatabase: (db: string) => `CREATE DATABASE IF NOT EXISTS ${ident(db)}`,
  createMigrationsTable: (db: string) =>
    `CREATE TABLE IF NOT EXISTS ${ident(db)}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version`,
  appliedVersions: (db: string) =>
    `SELECT DISTINCT version FROM ${ident(db)}.schema_migrations ORDER BY version`,
  recordMigration: (db: string, m: Migration) =>
    `INSERT INTO ${ident(db)}.schema_migrations (version, name, applied_at) VALUES (${lit(m.version)}, ${lit(m.name)}, now())`,
  schemaVersion: (db: string) => `SELECT max(version) AS version FROM ${ident(db)}.schema_migrations`,

  eventsTable: (db: string) => `${ident(db)}.events`,
  rewritesTable: (db: string) => `${ident(db)}.event_rewrites`,
  ledgerTable: (db: string) => `${ident(db)}.event_ids`,

  /**
   * Ledger rows for the given ids: the winning copy's fingerprint and its event-row key
   * (customer, type, `ts_ms`). One statement, unbounded: the sink uses {@link sql.ledgerLookups}.
   */
  ledgerLookup: (db: string, ids: readonly string[]) =>
    ledgerLookupIn(db, ids.length === 0 ? "" : ids.map(lit).join(",")),

  /** {@link sql.ledgerLookup} split into statements that each stay under {@link maxInListBytes}. */
  ledgerLookups: (db: string, ids: readonly string[]): string[] =>
    inLists(ids.map(lit)).map((list) => ledgerLookupIn(db, list)),

  /**
   * Which of the given event rows (by the events table's whole sort key) are written, chunked
   * like {@link sql.ledgerLookups}. The key lets ClickHouse read only the granules around each row.
   */
  writtenEvents: (db: string, keys: readonly EventKey[]): string[] =>
    inLists(keys.map((k) => `(${lit(k.customer)}, ${lit(k.type)}, ${lit(k.ts)}, ${lit(k.id)})`)).map(
      (list) => `SELECT DISTINCT id FROM ${ident(db)}.events WHERE (customer, type, ts, id) IN (${list})`,
    ),

  ledgerPartitions: (db: string) =>
    `SELECT DISTINCT partition FROM system.parts WHERE database = ${lit(db)} AND table = 'event_ids' AND active`,
  dropLedgerPartition: (db: string, partition: string) =>
    `ALTER TABLE ${ident(db)}.event_ids DROP PARTITION ${lit(partition)}`,

  /** Distinct events matching a filter (the event debugger's count). */
  countEvents: (db: string, f: EventFilter) =>
    `SELECT toString(uniqExact(id)) AS count FROM ${ident(db)}.events WHERE ${where(f)}`,

  /**
   * Events matching a filter, newest first, one row per id, keyset-paginated on (ts, id).
   * `LIMIT 1 BY` removes copies a crash between insert and ack may have written twice.
   * NOTE: aliases must not shadow columns: ClickHouse resolves WHERE names to aliases first.
   */
  listEvents: (db: string, f: EventFilter, limit: number, after?: { ts: number; id: string }) =>
    `SELECT id, type, customer, toString(ts) AS ts_ms, toString(received) AS received_ms, source, prop_keys, prop_values
FROM ${ident(db)}.events
WHERE ${where(f)}${after ? ` AND (ts < ${lit(after.ts)} OR (ts = ${lit(after.ts)} AND id < ${lit(after.id)}))` : ""}
ORDER BY ts DESC, id DESC
LIMIT 1 BY id
LIMIT ${lit(Math.trunc(limit))}`,

  /**
   * Sum of one property over distinct events, exact (Decimal128, scale 9). Values that are not
   * plain decimals (`-?digits[.digits]`, at most 20 + 9 digits) are not summed but counted in
   * `invalid`: 18.16 and 26 disagree on how toDecimal128 treats them, a regex does not.
   */
  sumProperty: (db: string, f: EventFilter, property: string) =>
    `SELECT toString(sum(v)) AS sum, toString(count()) AS events, toString(countIf(NOT valid)) AS invalid FROM (
  SELECT id, any(prop_values[indexOf(prop_keys, ${lit(property)})]) AS raw,
    match(raw, ${lit(decimalPattern)}) AS valid, toDecimal128(if(valid, raw, '0'), 9) AS v
  FROM ${ident(db)}.events WHERE ${where(f)} AND has(prop_keys, ${lit(property)}) GROUP BY id)`,
} as const;

/**
 * What a usage query reads. Built by `usage/` from a meter; every name and value in it reaches
 * SQL through {@link lit}.
 */
export interface UsageSpec {
  eventType: string;
  /** One customer, or every customer (then grouped by customer). */
  customer?: string | undefined;
  fromMs: number;
  toMs: number;
  /** The property the aggregation reads (none for `count`). */
  valueProperty?: string | undefined;
  /** The value must be a plain decimal (sum, min, max, gauges). */
  numeric: boolean;
  filters: readonly UsageFilter[];
  groupBy: readonly string[];
  /** How each row is put in a window (see {@link bucketExpr}). */
  bucket: { size: "none" | "minute" | "hour" | "day" | "month"; tz: string };
  /** With `customer` omitted: only these customers. */
  customers?: readonly string[] | undefined;
  /** Only events received at or before this instant (the close's bitemporal cut). */
  receivedUpToMs?: number | undefined;
  /**
   * Only events received at or after this instant (the rollup's open tail, or one fill unit).
   * An event's receive time is the earliest of its rows' (copies of a rewritten id may differ).
   */
  receivedFromMs?: number | undefined;
}

export type UsageFilter =
  | { property: string; op: "equals" | "not_equals"; value: string }
  | { property: string; op: "in" | "not_in"; values: readonly string[] }
  | { property: string; op: "exists"; value: boolean };

/** Aggregations computed inside ClickHouse, one value per (customer, groups, window). */
export type SqlAggregation = "count" | "sum" | "min" | "max" | "unique_count" | "latest";

const prop = (name: string) => `prop_values[indexOf(prop_keys, ${lit(name)})]`;

function usageFilterSql(f: UsageFilter): string {
  switch (f.op) {
    case "equals":
      return `(has(prop_keys, ${lit(f.property)}) AND ${prop(f.property)} = ${lit(f.value)})`;
    case "not_equals":
      return `NOT (has(prop_keys, ${lit(f.property)}) AND ${prop(f.property)} = ${lit(f.value)})`;
    case "in":
      return `(has(prop_keys, ${lit(f.property)}) AND has(${lit(f.values)}, ${prop(f.property)}))`;
    case "not_in":
      return `NOT (has(prop_keys, ${lit(f.property)}) AND has(${lit(f.values)}, ${prop(f.property)}))`;
    case "exists":
      return `${f.value ? "" : "NOT "}has(prop_keys, ${lit(f.property)})`;
  }
}

/**
 * The window a row falls in, as text: the epoch second of the window's start in the time zone
 * (minute, hour, day: `toStartOf*` with a zone returns the true instant, so the two 02:00 hours
 * of a DST fall-back stay apart), or the local date of the month's first day (months are mapped
 * to instants by the caller). `none`: one window.
 */
function bucketExpr(b: UsageSpec["bucket"], tsCol: string): string {
  const dt = `toDateTime(intDiv(${tsCol}, 1000))`;
  switch (b.size) {
    case "none":
      return "'0'";
    case "minute":
      return `toString(toUnixTimestamp(toStartOfMinute(${dt}, ${lit(b.tz)})))`;
    case "hour":
      return `toString(toUnixTimestamp(toStartOfHour(${dt}, ${lit(b.tz)})))`;
    case "day":
      return `toString(toUnixTimestamp(toStartOfDay(${dt}, ${lit(b.tz)})))`;
    case "month":
      return `toString(toStartOfMonth(${dt}, ${lit(b.tz)}))`;
  }
}

/**
 * Which ids a usage query collapses: `none` — no rewrite is recorded in the scope (the usual
 * case: one plain scan); `recorded` — the ids recorded in `event_rewrites` for the scope;
 * `all` — every id (`GROUP BY id`), for callers without the record check. See `usage/query.ts`
 * for how the caller makes sure no record appears while the query runs.
 */
export type Collapse = { kind: "none" } | { kind: "recorded" } | { kind: "all" };

/** How many rewrites are recorded for a spec's customer, type and `[from, to)` (or `ts < from`). */
export function usageRewriteCount(db: string, s: UsageSpec, range: "range" | "before"): string {
  return `SELECT toString(count()) AS n FROM ${ident(db)}.event_rewrites WHERE ${scopeWhere(s, range).join(" AND ")}`;
}

function scopeWhere(s: UsageSpec, range: "range" | "before"): string[] {
  const where = [
    `type = ${lit(s.eventType)}`,
    range === "range" ? `ts >= ${lit(s.fromMs)} AND ts < ${lit(s.toMs)}` : `ts < ${lit(s.fromMs)}`,
  ];
  if (s.customer !== undefined) where.unshift(`customer = ${lit(s.customer)}`);
  else if (s.customers !== undefined)
    where.unshift(`customer IN (${s.customers.map(lit).join(",") || "''"})`);
  return where;
}

/**
 * One row per event matching the spec: `u_id, u_c` (customer), `u_ts`, `u_v` (value text),
 * `u_ok` (value is a plain decimal), `u_g0..` (group values, '' when absent).
 *
 * Exactly once at read time without collapsing every row by id: all rows ever written for an
 * id are identical (the sink's ledger fingerprints), and a second copy exists only where the
 * sink rewrote an event after a crash or an ambiguous insert — recording the id in
 * `event_rewrites` *before* writing the copy. Rows of other ids are single and are read as they
 * are (one scan, no `GROUP BY id`); recorded ids, usually none, are collapsed on their own.
 */
function dedupedEvents(db: string, s: UsageSpec, range: "range" | "before", collapse: Collapse): string {
  const match = scopeWhere(s, range);
  // Not in scopeWhere: event_rewrites has no receive time (a rewrite's rows are identical anyway).
  if (s.receivedUpToMs !== undefined) match.push(`received <= ${lit(s.receivedUpToMs)}`);
  if (s.valueProperty !== undefined) match.push(`has(prop_keys, ${lit(s.valueProperty)})`);
  for (const f of s.filters) match.push(usageFilterSql(f));
  const value = s.valueProperty === undefined ? "''" : prop(s.valueProperty);
  const ok = `match(u_v, ${lit(decimalPattern)}) AS u_ok`;
  // The lower receive bound applies to an id's earliest row: a WHERE on a collapsed id's rows
  // would let a later copy count an event first received before the bound.
  const from = s.receivedFromMs;
  const collapsedSelect = (where: string) => {
    const groups = s.groupBy.map((g, i) => `, any(${prop(g)}) AS u_g${i}`).join("");
    return `SELECT id AS u_id, any(customer) AS u_c, any(ts) AS u_ts, any(${value}) AS u_v, ${ok}, min(received) AS u_r${groups}
  FROM ${ident(db)}.events WHERE ${where} GROUP BY id${from === undefined ? "" : ` HAVING u_r >= ${lit(from)}`}`;
  };
  if (collapse.kind === "all") return collapsedSelect(match.join(" AND "));
  const groups = s.groupBy.map((g, i) => `, ${prop(g)} AS u_g${i}`).join("");
  const single = (
    where: string,
  ) => `SELECT id AS u_id, customer AS u_c, ts AS u_ts, ${value} AS u_v, ${ok}, received AS u_r${groups}
  FROM ${ident(db)}.events WHERE ${where}${from === undefined ? "" : ` AND received >= ${lit(from)}`}`;
  if (collapse.kind === "none") return single(match.join(" AND "));
  const recorded = `id IN (SELECT id FROM ${ident(db)}.event_rewrites WHERE ${scopeWhere(s, range).join(" AND ")})`;
  // The recorded ids' event times narrow the collapsed branch through the sort key (rows of an
  // id share its time): without it the branch reads the id column of the whole range.
  const recordedTimes = `ts IN (SELECT ts FROM ${ident(db)}.event_rewrites WHERE ${scopeWhere(s, range).join(" AND ")})`;
  return `${single(`${match.join(" AND ")} AND NOT (${recorded})`)}
  UNION ALL
  ${collapsedSelect(`${match.join(" AND ")} AND ${recordedTimes} AND ${recorded}`)}`;
}

function groupCols(s: UsageSpec): string[] {
  return [...(s.customer === undefined ? ["u_c"] : []), ...s.groupBy.map((_, i) => `u_g${i}`)];
}

/**
 * The evidence behind a usage number: per customer, how many distinct events the meter matched
 * and an order-independent digest of their ids (`idDigest` in usage/evidence.ts computes the
 * same from a list): the sums, modulo 2^64, of the first and of the second 8 bytes of each id's
 * SHA-256 read as little-endian unsigned integers. Rows `u_c, n, d1, d2`.
 */
export function usageEvidence(db: string, s: UsageSpec, collapse: Collapse = { kind: "all" }): string {
  const h = "SHA256(u_id)";
  return `SELECT u_c, toString(count()) AS n,
  toString(sum(reinterpretAsUInt64(substring(${h}, 1, 8)))) AS d1,
  toString(sum(reinterpretAsUInt64(substring(${h}, 9, 8)))) AS d2
FROM (${dedupedEvents(db, { ...s, groupBy: [] }, "range", collapse)})
GROUP BY u_c`;
}

/**
 * Several meters' totals per customer over one scope (the same range, receive cut and
 * customers; no windows, no groups) in ONE scan of the events, with each meter's evidence: the
 * close's question for every metered price of every subscription billed over the same period.
 * Row `u_c` (customer) and, per spec `i`: `v{i}` (the value as {@link usageAggregate} computes
 * it), `ok{i}` (rows with a valid value; `valid` there), `n{i}`, `d1{i}`, `d2{i}` (the
 * {@link usageEvidence} of the same rows). A spec's own conditions (type, value property,
 * filters) become `-If` conditions over rows read once; the collapse of rewritten ids is the
 * same as {@link dedupedEvents}' (the rows of one id are identical, so collapsing before
 * filtering changes nothing). `usage/query.ts` checks this against queryUsage in tests.
 */
export function usageTotals(
  db: string,
  specs: readonly { spec: UsageSpec; agg: SqlAggregation }[],
  collapse: Collapse = { kind: "all" },
): string {
  const first = specs[0]?.spec;
  if (first === undefined) throw new Error("usageTotals needs at least one spec");
  const types = [...new Set(specs.map((x) => x.spec.eventType))];
  const scope = scopeWhere({ ...first, eventType: "" }, "range").filter((w) => !w.startsWith("type = "));
  const match = [`type IN (${types.map(lit).join(", ")})`, ...scope];
  if (first.receivedUpToMs !== undefined) match.push(`received <= ${lit(first.receivedUpToMs)}`);
  const cols = "customer AS u_c, type AS u_t, ts AS u_ts, prop_keys, prop_values";
  const single = (where: string) => `SELECT id AS u_id, ${cols} FROM ${ident(db)}.events WHERE ${where}`;
  const collapsed = (where: string) =>
    `SELECT id AS u_id, any(customer) AS u_c, any(type) AS u_t, any(ts) AS u_ts, any(prop_keys) AS prop_keys, any(prop_values) AS prop_values
  FROM ${ident(db)}.events WHERE ${where} GROUP BY id`;
  const recorded = `id IN (SELECT id FROM ${ident(db)}.event_rewrites WHERE ${[`type IN (${types.map(lit).join(", ")})`, ...scope].join(" AND ")})`;
  const rows =
    collapse.kind === "all"
      ? collapsed(match.join(" AND "))
      : collapse.kind === "none"
        ? single(match.join(" AND "))
        : `${single(`${match.join(" AND ")} AND NOT (${recorded})`)}
  UNION ALL
  ${collapsed(`${match.join(" AND ")} AND ${recorded}`)}`;
  const h = "SHA256(u_id)";
  const columns = specs.map(({ spec: sp, agg }, i) => {
    const cond = [`u_t = ${lit(sp.eventType)}`];
    if (sp.valueProperty !== undefined) cond.push(`has(prop_keys, ${lit(sp.valueProperty)})`);
    for (const f of sp.filters) cond.push(usageFilterSql(f));
    const c = `(${cond.join(" AND ")})`;
    const v = sp.valueProperty === undefined ? "''" : prop(sp.valueProperty);
    const ok = `match(${v}, ${lit(decimalPattern)})`;
    const dec = `toDecimal128(if(${ok}, ${v}, '0'), 9)`;
    const value: Record<SqlAggregation, string> = {
      count: `toString(countIf(${c}))`,
      sum: `toString(sumIf(${dec}, ${c} AND ${ok}))`,
      min: `toString(minIf(${dec}, ${c} AND ${ok}))`,
      max: `toString(maxIf(${dec}, ${c} AND ${ok}))`,
      unique_count: `toString(uniqExactIf(${v}, ${c}))`,
      latest: `argMaxIf(${v}, (u_ts, u_id), ${c})`,
    };
    return `${value[agg]} AS v${i}, toString(${sp.numeric ? `countIf(${c} AND ${ok})` : `countIf(${c})`}) AS ok${i},
  toString(countIf(${c})) AS n${i},
  toString(sumIf(reinterpretAsUInt64(substring(${h}, 1, 8)), ${c})) AS d1${i},
  toString(sumIf(reinterpretAsUInt64(substring(${h}, 9, 8)), ${c})) AS d2${i}`;
  });
  return `SELECT u_c, ${columns.join(",\n  ")}
FROM (${rows})
GROUP BY u_c`;
}

/** How many rewrites are recorded for the types and scope of {@link usageTotals}' specs. */
export function usageTotalsRewriteCount(db: string, specs: readonly { spec: UsageSpec }[]): string {
  const first = specs[0]?.spec;
  if (first === undefined) throw new Error("usageTotalsRewriteCount needs at least one spec");
  const types = [...new Set(specs.map((x) => x.spec.eventType))];
  const scope = scopeWhere({ ...first, eventType: "" }, "range").filter((w) => !w.startsWith("type = "));
  return `SELECT toString(count()) AS n FROM ${ident(db)}.event_rewrites WHERE ${[`type IN (${types.map(lit).join(", ")})`, ...scope].join(" AND ")}`;
}

/** The events behind a usage number, by id (a page after `afterId`): rows `u_id, u_ts, u_v`. */
export function usageEventPage(
  db: string,
  s: UsageSpec,
  afterId: string | undefined,
  limit: number,
  collapse: Collapse = { kind: "all" },
): string {
  return `SELECT u_id, toString(u_ts) AS u_ts, u_v
FROM (${dedupedEvents(db, { ...s, groupBy: [] }, "range", collapse)})
${afterId === undefined ? "" : `WHERE u_id > ${lit(afterId)}`}
ORDER BY u_id LIMIT ${lit(limit)}`;
}

/** Rows `u_c?, u_g*, bucket, value, valid, invalid` of an aggregation computed in ClickHouse. */
export function usageAggregate(
  db: string,
  s: UsageSpec,
  agg: SqlAggregation,
  maxRows: number,
  collapse: Collapse = { kind: "all" },
): string {
  const dec = `toDecimal128(if(u_ok, u_v, '0'), 9)`;
  const value: Record<SqlAggregation, string> = {
    count: "toString(count())",
    sum: `toString(sumIf(${dec}, u_ok))`,
    min: `toString(minIf(${dec}, u_ok))`,
    max: `toString(maxIf(${dec}, u_ok))`,
    unique_count: "toString(uniqExact(u_v))",
    latest: "argMax(u_v, (u_ts, u_id))",
  };
  const keys = [...groupCols(s), "bucket"];
  return `SELECT ${groupCols(s)
    .map((k) => `${k}, `)
    .join("")}${bucketExpr(s.bucket, "u_ts")} AS bucket, ${value[agg]} AS value,
  toString(${s.numeric ? "countIf(u_ok)" : "count()"}) AS valid, toString(${s.numeric ? "countIf(NOT u_ok)" : "0"}) AS invalid
FROM (${dedupedEvents(db, s, "range", collapse)})
GROUP BY ${keys.join(", ")}
ORDER BY ${keys.join(", ")}
LIMIT ${lit(Math.trunc(maxRows))}`;
}

/**
 * Gauge points in `[from, to)`: per customer and group, the arrays of time, id and value
 * (valid decimals only; the others counted in `invalid`). Ordering and time weighting happen
 * in `usage/` with exact decimals.
 */
export function usageGaugePoints(
  db: string,
  s: UsageSpec,
  maxRows: number,
  collapse: Collapse = { kind: "all" },
): string {
  const keys = groupCols(s);
  return `SELECT ${keys.map((k) => `${k}, `).join("")}groupArrayIf(toString(u_ts), u_ok) AS ts,
  groupArrayIf(u_id, u_ok) AS ids, groupArrayIf(u_v, u_ok) AS vs, toString(countIf(NOT u_ok)) AS invalid
FROM (${dedupedEvents(db, s, "range", collapse)})
${keys.length > 0 ? `GROUP BY ${keys.join(", ")}\n` : ""}LIMIT ${lit(Math.trunc(maxRows))}`;
}

/**
 * Gauge points in `[from, to)` summarised per customer, group and time bucket
 * `intDiv(u_ts + shift, bucketMs)` (the caller picks a bucket that nests in its windows), so
 * the edge reads O(buckets) rows whatever the number of points. Per bucket, over its valid
 * points ordered by (time, id) as `latest` orders them: the first and last instant (`t1`,
 * `tk`), the level after the bucket (`lk`, the last value), the highest value (`mx`), and
 * `inner_hi` × 1e18 + `inner_lo`, the exact time-weighted sum Σ value × (next time − time) of the levels between
 * `t1` and `tk` (two values at one instant: the first holds for 0 ms). A bucket of at most a
 * day keeps that Decimal128(9) sum from overflowing: |value| < 1e20, 1e20 × 8.64e7 ms < 1e29.
 * Rows with `valid = 0` only carry the count of values that are not plain decimals (`invalid`).
 */
export function usageGaugeBuckets(
  db: string,
  s: UsageSpec,
  bucketMs: number,
  shiftMs: number,
  maxRows: number,
  collapse: Collapse = { kind: "all" },
): string {
  const k = groupCols(s)
    .map((c) => `${c}, `)
    .join("");
  const dec = (x: string) => `toDecimal128(${x}.3, 9)`;
  const e18 = "1000000000000000000";
  // arrayReduce('sum'), not arraySum: 18.16's arraySum cannot add Decimals. 18.16 also prints
  // large Decimal128 values wrong (NUL bytes in the digits), so no large Decimal is printed: the
  // highest value is returned as its own text (argMax), and `inner` in two parts that print
  // correctly, inner = inner_hi × 1e18 + inner_lo (inner_hi an Int64, |inner_lo| < 1e18).
  return `SELECT ${k}bucket, t1, tk, lk, mx, toString(g_hi) AS inner_hi,
  toString(g_inner - toDecimal128(g_hi, 0) * ${e18}) AS inner_lo, valid, invalid
FROM (
  SELECT ${k}b, toString(b) AS bucket, toString(g_s[1].1) AS t1, toString(g_s[-1].1) AS tk, g_s[-1].3 AS lk,
    arrayReduce('argMax', arrayMap(x -> x.3, g_s), arrayMap(x -> ${dec("x")}, g_s)) AS mx,
    arrayReduce('sum', arrayMap((x, y) -> ${dec("x")} * (y.1 - x.1), arrayPopBack(g_s), arrayPopFront(g_s))) AS g_inner,
    toInt64(g_inner / ${e18}) AS g_hi, valid, invalid
  FROM (
    SELECT ${k}intDiv(u_ts + ${lit(Math.trunc(shiftMs))}, ${lit(Math.trunc(bucketMs))}) AS b,
      arraySort(groupArrayIf((u_ts, u_id, u_v), u_ok)) AS g_s,
      toString(countIf(u_ok)) AS valid, toString(countIf(NOT u_ok)) AS invalid
    FROM (${dedupedEvents(db, s, "range", collapse)})
    GROUP BY ${k}b
  )
)
ORDER BY ${k}b
LIMIT ${lit(Math.trunc(maxRows))}`;
}

/** The gauge level carried into `from`: per customer and group, the newest valid value before it. */
export function usageGaugeCarryIn(
  db: string,
  s: UsageSpec,
  maxRows: number,
  collapse: Collapse = { kind: "all" },
): string {
  const keys = groupCols(s);
  return `SELECT ${keys.map((k) => `${k}, `).join("")}toString(max(u_ts)) AS ts, argMax(u_v, (u_ts, u_id)) AS v, toString(count()) AS n
FROM (${dedupedEvents(db, s, "before", collapse)})
WHERE u_ok
${keys.length > 0 ? `GROUP BY ${keys.join(", ")}\n` : ""}LIMIT ${lit(Math.trunc(maxRows))}`;
}

/** Event-time grain of the rollup: every modern zone's offset and DST change is a multiple of it. */
export const rollupBucketMs = 15 * 60_000;
/** Receive-time grain of the rollup: fills and receive cuts are answered at hour boundaries. */
export const rollupReceiveMs = 3_600_000;
/** Most dimensions a meter declares (the rollup's `g0..g4`). */
export const rollupDimensions = 5;

/** `x` rounded down to a multiple of `m` (ClickHouse's `%` keeps the dividend's sign). */
const floorTo = (x: string, m: number) => `toInt64(${x} - (((${x} % ${lit(m)}) + ${lit(m)}) % ${lit(m)}))`;

/**
 * The partial columns a reader or a fill needs, besides `n` (events, always: valid/invalid and
 * `count`). Each aggregation reads only its own: a count never touches the uniqExact states
 * (the widest column by far), a sum never the `latest` triple. `evidence`: the digest sums
 * `d1`/`d2` (the close's totals only; an SHA-256 per event to compute).
 */
export interface RollupColumns {
  ok: boolean;
  s: boolean;
  mn: boolean;
  mx: boolean;
  latest: boolean;
  uq: boolean;
  evidence: boolean;
}

/** What an aggregation reads (`numeric`: valid/invalid need `ok`). */
export function rollupColumnsFor(agg: SqlAggregation, numeric: boolean, evidence: boolean): RollupColumns {
  return {
    ok: numeric || agg === "min" || agg === "max",
    s: agg === "sum",
    mn: agg === "min",
    mx: agg === "max",
    latest: agg === "latest",
    uq: agg === "unique_count",
    evidence,
  };
}

/** The partial column names of a {@link RollupColumns}, in table order, after `eb` and `n`. */
function rollupColumnNames(c: RollupColumns): string[] {
  return [
    ...(c.ok ? ["ok"] : []),
    ...(c.s ? ["s"] : []),
    ...(c.mn ? ["mn"] : []),
    ...(c.mx ? ["mx"] : []),
    ...(c.latest ? ["l_ts", "l_id", "l_v"] : []),
    ...(c.uq ? ["uq"] : []),
    ...(c.evidence ? ["d1", "d2"] : []),
  ];
}

/**
 * The rollup's partial aggregates over a spec's events (collapsed like every usage read): per
 * customer, group (`u_g*` as `s.groupBy` names them), 15-minute event bucket `eb` and receive
 * hour `rb`. Columns (only those `c` asks for, besides `n`): `n` events, `ok` with a
 * plain-decimal value, `s`/`mn`/`mx` their sum, min and max (Decimal128(9)), `l_ts`/`l_id`/`l_v`
 * the newest event by (time, id) as `latest` orders them, `uq` the uniqExact state of the values
 * (exact and mergeable across buckets), `d1`/`d2` the evidence digest sums (modulo 2^64, so they
 * add up across buckets). One builder for both the fill and the open tail, so the two can never
 * disagree on what a row contributes.
 */
function rollupPartials(db: string, s: UsageSpec, c: RollupColumns, collapse: Collapse): string {
  const dec = `toDecimal128(if(u_ok, u_v, '0'), 9)`;
  const groups = s.groupBy.map((_, i) => `u_g${i}, `).join("");
  const h = "SHA256(u_id)";
  const cols = [
    "count() AS n",
    ...(c.ok ? ["countIf(u_ok) AS ok"] : []),
    ...(c.s ? [`sumIf(${dec}, u_ok) AS s`] : []),
    ...(c.mn ? [`minIf(${dec}, u_ok) AS mn`] : []),
    ...(c.mx ? [`maxIf(${dec}, u_ok) AS mx`] : []),
    ...(c.latest
      ? ["max(u_ts) AS l_ts", "argMax(u_id, (u_ts, u_id)) AS l_id", "argMax(u_v, (u_ts, u_id)) AS l_v"]
      : []),
    ...(c.uq ? ["uniqExactState(u_v) AS uq"] : []),
    ...(c.evidence
      ? [
          `sum(reinterpretAsUInt64(substring(${h}, 1, 8))) AS d1`,
          `sum(reinterpretAsUInt64(substring(${h}, 9, 8))) AS d2`,
        ]
      : []),
  ];
  return `SELECT u_c, ${groups}${floorTo("u_ts", rollupBucketMs)} AS eb, ${floorTo("u_r", rollupReceiveMs)} AS rb,
  ${cols.join(", ")}
FROM (${dedupedEvents(db, s, "range", collapse)})
GROUP BY u_c, ${groups}eb, rb`;
}

/** Which rollup rows a read may use: one meter version's recorded fills, below a receive horizon. */
export interface RollupScope {
  meter: string;
  version: number;
  /** Rows of events received before this instant (a multiple of {@link rollupReceiveMs}). */
  horizonMs: number;
  /** Recorded fills not on the chain the reader chose (overlapping racers); usually none. */
  excludedTokens: readonly string[];
  /** Per requested group (`s.groupBy[i]`), the rollup column `g{j}` holding it. */
  groupColumns: readonly number[];
  /**
   * The event times the open tail can hold (from {@link rollupTailProbe}): null = no event in
   * scope was received at or after the horizon, so the statement reads the rollup alone.
   * @default the request's range
   */
  tail?: { fromMs: number; toMs: number } | null | undefined;
}

/**
 * What the open tail of a rollup read holds: `n` events of the spec's customer(s), type and
 * range received at or after `horizonMs` (and at or before the receive cut), and their first
 * and last event time. Reads only key columns and `received`. An event missing from it was
 * written after the probe, so it was received after the watermark the caller read first (or it
 * is a copy of an id the probe saw, with the same time): leaving it out keeps "complete up to
 * the watermark" true and never counts a copy.
 */
export function rollupTailProbe(db: string, s: UsageSpec, horizonMs: number): string {
  const where = [...scopeWhere(s, "range"), `received >= ${lit(horizonMs)}`];
  if (s.receivedUpToMs !== undefined) where.push(`received <= ${lit(s.receivedUpToMs)}`);
  return `SELECT toString(count()) AS n, toString(min(ts)) AS lo, toString(max(ts)) AS hi FROM ${ident(db)}.events WHERE ${where.join(" AND ")}`;
}

/** How many rewrite records' event times {@link rollupReadPlan} returns (beyond it: only the count). */
export const readPlanMaxRecordTimes = 1000;

/**
 * Everything a read must know before its main statement, in ONE round trip (each statement on
 * 18.16 costs a few milliseconds of fixed overhead): rows `k, a, b, c` (text) of three kinds —
 * `u`: a recorded fill unit of the meter version (`a` r_from, `b` r_to, `c` token);
 * `p`: the tail probe ({@link rollupTailProbe}) taken at the newest unit's end, capped at
 * `horizonCapMs` (`a` count, `b`/`c` first and last event time) — valid when the chain the
 * caller derives from the units ends there (it does unless units are missing or racing; the
 * caller then probes again); a meter version with no unit probes nothing (`0 > 0` is a constant
 * false);
 * `r`: the rewrite records in the spec's scope: `a` their count (what {@link usageRewriteCount}
 * gives: the raw path's "before" count), `b` the event times of up to
 * {@link readPlanMaxRecordTimes} of them as a JSON array (from which the caller counts those in
 * the tail's times: usually none, so the tail is a plain scan even when the month has rewrites).
 * One WITH-bound subquery instead would be evaluated once per use on 18.16 (measured: 3x slower).
 */
export function rollupReadPlan(
  db: string,
  s: UsageSpec,
  meter: { key: string; version: number },
  horizonCapMs: number | undefined,
): string {
  const m = `meter = ${lit(meter.key)} AND meter_version = ${lit(meter.version)}`;
  const newest = `(SELECT max(r_to) FROM ${ident(db)}.rollup_fills WHERE ${m})`;
  const horizon = horizonCapMs === undefined ? newest : `least(${newest}, ${lit(horizonCapMs)})`;
  const probe = [...scopeWhere(s, "range"), `${newest} > 0`, `received >= ${horizon}`];
  if (s.receivedUpToMs !== undefined) probe.push(`received <= ${lit(s.receivedUpToMs)}`);
  return `SELECT 'u' AS k, toString(r_from) AS a, toString(r_to) AS b, token AS c FROM ${ident(db)}.rollup_fills WHERE ${m}
UNION ALL
SELECT 'p' AS k, toString(count()) AS a, toString(min(ts)) AS b, toString(max(ts)) AS c FROM ${ident(db)}.events WHERE ${probe.join(" AND ")}
UNION ALL
SELECT 'r' AS k, toString(count()) AS a, toString(groupArray(${readPlanMaxRecordTimes})(ts)) AS b, '' AS c
FROM ${ident(db)}.event_rewrites WHERE ${scopeWhere(s, "range").join(" AND ")}`;
}

/**
 * Writes one fill unit: the partial aggregates of every event received in
 * `[s.receivedFromMs, s.receivedUpToMs]` (any event time), under `token`. The caller records
 * the fill in `rollup_fills` only after this statement returned ({@link rollupRecordFill}).
 * `s.groupBy` must be the meter's declared dimensions, in order.
 */
export function rollupFill(
  db: string,
  s: UsageSpec,
  meter: { key: string; version: number },
  token: string,
  collapse: Collapse,
  agg: SqlAggregation,
): string {
  if (s.groupBy.length > rollupDimensions) throw new Error("a meter declares at most 5 dimensions");
  const g = Array.from({ length: rollupDimensions }, (_, i) => (i < s.groupBy.length ? `u_g${i}` : "''"));
  // Only the meter's own aggregation's partials (and the close's evidence): the columns left
  // out take their defaults (an empty uniqExact state, zeros), which no read of this meter
  // version looks at. A unique_count fill is the only one that builds distinct-value states.
  const c = rollupColumnsFor(agg, s.numeric, true);
  const cols = ["eb", "n", ...rollupColumnNames(c)].join(", ");
  return `INSERT INTO ${ident(db)}.usage_rollup (meter, meter_version, token, rb, customer, g0, g1, g2, g3, g4, ${cols})
SELECT ${lit(meter.key)}, ${lit(meter.version)}, ${lit(token)}, rb, u_c, ${g.join(", ")}, ${cols}
FROM (${rollupPartials(db, s, c, collapse)})`;
}

/**
 * How many rows of an event type were received in each hour of `[fromMs, toMs)`: rows `h` (the
 * hour's start, ms) and `n`, as text, in order. Sizes a fill unit (copies counted too: an upper
 * bound). Reads the `received` column of the type's events.
 */
export function rollupReceiveHistogram(db: string, eventType: string, fromMs: number, toMs: number): string {
  return `SELECT toString(intDiv(received, ${rollupReceiveMs}) * ${rollupReceiveMs}) AS h, toString(count()) AS n
FROM ${ident(db)}.events WHERE type = ${lit(eventType)} AND received >= ${lit(fromMs)} AND received < ${lit(toMs)}
GROUP BY h ORDER BY h`;
}

/** Records a fill unit once its rows are written: from now on readers count them. */
export function rollupRecordFill(
  db: string,
  meter: { key: string; version: number },
  fromMs: number,
  toMs: number,
  token: string,
): string {
  return `INSERT INTO ${ident(db)}.rollup_fills (meter, meter_version, r_from, r_to, token, filled_at) VALUES (${lit(meter.key)}, ${lit(meter.version)}, ${lit(fromMs)}, ${lit(toMs)}, ${lit(token)}, now())`;
}

/** Recorded fill units of one meter version: rows `r_from, r_to, token` (as text), in order. */
export function rollupFills(db: string, meter: { key: string; version: number }): string {
  return `SELECT toString(r_from) AS r_from, toString(r_to) AS r_to, token FROM ${ident(db)}.rollup_fills
WHERE meter = ${lit(meter.key)} AND meter_version = ${lit(meter.version)}
ORDER BY r_from, r_to DESC, token`;
}

/**
 * {@link usageAggregate} answered from the rollup for events received before `r.horizonMs` and
 * from raw events for the rest (`s.receivedFromMs` must be `r.horizonMs`): both sides are the
 * same partial aggregates ({@link rollupPartials}) merged per window in one statement, so
 * `uniqExact` stays exact across windows and halves. Same columns as usageAggregate, plus the
 * evidence `ev_n`, `ev_d1`, `ev_d2` of each row (the close's totals). `s.fromMs`/`s.toMs` and every window
 * boundary must be multiples of {@link rollupBucketMs} (the caller checks; otherwise it reads raw).
 */
export function usageRollupAggregate(
  db: string,
  s: UsageSpec,
  agg: SqlAggregation,
  r: RollupScope,
  maxRows: number,
  collapse: Collapse = { kind: "all" },
  evidence = false,
): string {
  const groups = s.groupBy.map((_, i) => `u_g${i}, `).join("");
  // Only the columns this aggregation merges: MergeTree reads a column only if it is named.
  const c = rollupColumnsFor(agg, s.numeric, evidence);
  const cols = ["eb", "n", ...rollupColumnNames(c)].join(", ");
  const meter = `meter = ${lit(r.meter)} AND meter_version = ${lit(r.version)}`;
  const where = [
    meter,
    `token IN (SELECT token FROM ${ident(db)}.rollup_fills WHERE ${meter})`,
    ...(r.excludedTokens.length > 0 ? [`token NOT IN (${r.excludedTokens.map(lit).join(", ")})`] : []),
    `rb < ${lit(r.horizonMs)}`,
    `eb >= ${lit(s.fromMs)} AND eb < ${lit(s.toMs)}`,
  ];
  if (s.customer !== undefined) where.push(`customer = ${lit(s.customer)}`);
  else if (s.customers !== undefined) where.push(`customer IN (${s.customers.map(lit).join(",") || "''"})`);
  const rolled = `SELECT customer AS u_c, ${r.groupColumns.map((j, i) => `g${j} AS u_g${i}, `).join("")}${cols}
  FROM ${ident(db)}.usage_rollup WHERE ${where.join(" AND ")}`;
  // The tail only over the event times the probe found (rows of one id share their time).
  const narrowed =
    r.tail === undefined || r.tail === null
      ? s
      : { ...s, fromMs: Math.max(s.fromMs, r.tail.fromMs), toMs: Math.min(s.toMs, r.tail.toMs) };
  const tail =
    r.tail === null
      ? ""
      : `\n  UNION ALL\n  SELECT u_c, ${groups}${cols} FROM (${rollupPartials(db, narrowed, c, collapse)})`;
  const value: Record<SqlAggregation, string> = {
    count: "toString(sum(n))",
    // sum(s) over no row with a value is 0 like the raw path's sumIf.
    sum: "toString(sum(s))",
    min: "toString(minIf(mn, ok > 0))",
    max: "toString(maxIf(mx, ok > 0))",
    unique_count: "toString(uniqExactMerge(uq))",
    latest: "argMax(l_v, (l_ts, l_id))",
  };
  const keys = [...groupCols(s), "bucket"];
  return `SELECT ${groupCols(s)
    .map((k) => `${k}, `)
    .join("")}${bucketExpr(s.bucket, "eb")} AS bucket, ${value[agg]} AS value,
  toString(${s.numeric ? "sum(ok)" : "sum(n)"}) AS valid, toString(${s.numeric ? "sum(n) - sum(ok)" : "0"}) AS invalid${
    evidence ? ",\n  toString(sum(n)) AS ev_n, toString(sum(d1)) AS ev_d1, toString(sum(d2)) AS ev_d2" : ""
  }
FROM (${rolled}${tail})
GROUP BY ${keys.join(", ")}
ORDER BY ${keys.join(", ")}
LIMIT ${lit(Math.trunc(maxRows))}`;
}

/** Property values summable exactly as Decimal128(9). */
const decimalPattern = "^-?[0-9]{1,20}(\\.[0-9]{1,9})?$";

/** Filters of the event debugger and counts. Times are epoch ms; `to` is exclusive. */
export interface EventFilter {
  customer?: string | undefined;
  type?: string | undefined;
  fromMs?: number | undefined;
  toMs?: number | undefined;
}

function where(f: EventFilter): string {
  const parts = ["1"];
  if (f.customer !== undefined) parts.push(`customer = ${lit(f.customer)}`);
  if (f.type !== undefined) parts.push(`type = ${lit(f.type)}`);
  if (f.fromMs !== undefined) parts.push(`ts >= ${lit(f.fromMs)}`);
  if (f.toMs !== undefined) parts.push(`ts < ${lit(f.toMs)}`);
  return parts.join(" AND ");
}
