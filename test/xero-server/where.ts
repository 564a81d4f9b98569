import { badRequest } from "./errors.js";

/**
 * The subset of Xero's `where` filter this server understands (xero_accounting.yaml
 * `getManualJournals.where`: "Filter by an any element", example `Status=="DRAFT"`; the operators
 * `==`, `!=`, `.Contains("…")`, `.StartsWith("…")` joined by `AND`/`&&` or `OR`/`||` are those of
 * https://developer.xero.com/documentation/api/accounting/requests-and-responses#retrieving-a-filtered-set).
 * No parentheses, no mixing of AND and OR, string fields only. Anything else is a 400 naming the
 * clause, so a connector never silently gets an unfiltered list.
 */
type Clause = { field: string; op: "==" | "!=" | "Contains" | "StartsWith"; value: string };

const CLAUSE =
  /^\s*([A-Za-z][A-Za-z0-9.]*?)\s*(?:(==|!=)\s*"((?:[^"\\]|\\.)*)"|\.(Contains|StartsWith)\(\s*"((?:[^"\\]|\\.)*)"\s*\))\s*$/;

export function compileWhere(
  where: string,
  fields: readonly string[],
): (rec: Record<string, unknown>) => boolean {
  const hasAnd = /\s(AND|&&)\s/i.test(where);
  const hasOr = /\s(OR|\|\|)\s/i.test(where);
  if (hasAnd && hasOr) throw badRequest(`where: mixing AND and OR is not supported by this test server`);
  const parts = where.split(hasOr ? /\s(?:OR|\|\|)\s/i : /\s(?:AND|&&)\s/i);
  const clauses: Clause[] = parts.map((p) => {
    const m = CLAUSE.exec(p);
    if (m === null) throw badRequest(`where: cannot parse clause '${p.trim()}'`);
    const field = m[1]!;
    if (!fields.includes(field))
      throw badRequest(`where: field '${field}' is not supported by this test server`);
    const op = (m[2] ?? m[4]) as Clause["op"];
    const raw = m[3] ?? m[5] ?? "";
    return { field, op, value: raw.replace(/\\(.)/g, "$1") };
  });
  const test = (c: Clause, rec: Record<string, unknown>) => {
    const f = rec[c.field];
    const v = typeof f === "string" ? f : "";
    switch (c.op) {
      case "==":
        return v === c.value;
      case "!=":
        return v !== c.value;
      case "Contains":
        return v.includes(c.value);
      case "StartsWith":
        return v.startsWith(c.value);
    }
  };
  return hasOr ? (rec) => clauses.some((c) => test(c, rec)) : (rec) => clauses.every((c) => test(c, rec));
}
