import { invalid } from "./errors.js";

/**
 * The subset of Stripe's search query language the push needs
 * (https://docs.stripe.com/search#search-query-language): a clause is `field operator value`;
 * clauses join with a space or `AND`, or with `OR` (case-insensitive; "AND and OR operators are
 * mutually exclusive"); `-` negates a clause; metadata is `metadata['key']` or `metadata["key"]`;
 * string values are quoted with `'` or `"`; numeric fields take `:`, `>`, `<`, `>=`, `<=`.
 * Not implemented: substring `~`, `null` values, field-specific tokenisation. An unsupported query
 * is a 400 naming `query`, never a silent match-all.
 */
export interface Clause {
  field: string;
  metadataKey?: string;
  op: ":" | ">" | "<" | ">=" | "<=";
  value: string;
  numeric: boolean;
  negated: boolean;
}

export interface Query {
  join: "AND" | "OR";
  clauses: Clause[];
}

const bad = (why: string) => invalid(`Invalid search query: ${why}`, "query");

export function parseQuery(text: string, fields: readonly string[]): Query {
  let i = 0;
  const clauses: Clause[] = [];
  let join: "AND" | "OR" | undefined;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const quoted = (): string => {
    const q = text[i];
    if (q !== "'" && q !== '"') throw bad(`expected a quoted string at ${i}`);
    i++;
    let out = "";
    while (i < text.length && text[i] !== q) {
      if (text[i] === "\\" && i + 1 < text.length) i++;
      out += text[i];
      i++;
    }
    if (text[i] !== q) throw bad("unterminated string");
    i++;
    return out;
  };
  ws();
  while (i < text.length) {
    if (clauses.length > 0) {
      const m = /^(AND|OR)\s+/i.exec(text.slice(i));
      if (m) {
        const kw = m[1]!.toUpperCase() as "AND" | "OR";
        if (join !== undefined && join !== kw) throw bad("AND and OR cannot be combined");
        join = kw;
        i += m[0].length;
      } else {
        if (join === "OR") throw bad("AND and OR cannot be combined");
        join = "AND";
      }
    }
    const negated = text[i] === "-";
    if (negated) i++;
    const fm = /^[a-z_][a-z0-9_.]*/i.exec(text.slice(i));
    if (!fm) throw bad(`expected a field at ${i}`);
    const field = fm[0];
    i += field.length;
    if (!fields.includes(field)) throw bad(`unsupported field ${field}`);
    let metadataKey: string | undefined;
    if (field === "metadata") {
      if (text[i] !== "[") throw bad("metadata needs a key: metadata['key']");
      i++;
      metadataKey = quoted();
      if (text[i] !== "]") throw bad("expected ]");
      i++;
    }
    const om = /^(>=|<=|:|>|<)/.exec(text.slice(i));
    if (!om) throw bad(`expected an operator after ${field}`);
    const op = om[1] as Clause["op"];
    i += op.length;
    let value: string;
    let numeric = false;
    if (text[i] === "'" || text[i] === '"') {
      value = quoted();
    } else {
      const vm = /^-?\d+(\.\d+)?/.exec(text.slice(i));
      if (!vm) throw bad(`expected a value after ${field}${op}`);
      value = vm[0];
      numeric = true;
      i += value.length;
    }
    if (op !== ":" && !numeric) throw bad(`${op} needs a number`);
    const clause: Clause = { field, op, value, numeric, negated };
    if (metadataKey !== undefined) clause.metadataKey = metadataKey;
    clauses.push(clause);
    ws();
  }
  if (clauses.length === 0) throw bad("empty query");
  return { join: join ?? "AND", clauses };
}

/** `get(field, metadataKey)` returns the object's value for a clause; absent never matches. */
export function matches(
  query: Query,
  get: (field: string, metadataKey?: string) => string | number | null | undefined,
): boolean {
  const test = (c: Clause): boolean => {
    const v = get(c.field, c.metadataKey);
    let hit: boolean;
    if (v === null || v === undefined) hit = false;
    else if (c.op === ":") hit = String(v) === c.value;
    else {
      const n = Number(v);
      const x = Number(c.value);
      hit = c.op === ">" ? n > x : c.op === "<" ? n < x : c.op === ">=" ? n >= x : n <= x;
    }
    return c.negated ? !hit : hit;
  };
  return query.join === "AND" ? query.clauses.every(test) : query.clauses.some(test);
}
