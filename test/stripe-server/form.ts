/**
 * Stripe v1 request bodies and query strings are `application/x-www-form-urlencoded` with bracketed
 * nesting: `metadata[k]=v`, `lines[0][period][start]=1`. stripe-node 23 encodes them itself
 * (`utils.js#stringifyRequestData`: qs-compatible indexed arrays, brackets left unencoded, `null`
 * sent as the empty string, which Stripe reads as "unset"). This is the inverse, small on purpose:
 * numeric segments make arrays, everything else makes objects, and every leaf stays a string
 * because Stripe itself receives strings and coerces per parameter.
 */
export type FormValue = string | FormValue[] | { [key: string]: FormValue };
export type FormObject = { [key: string]: FormValue };

export class FormParseError extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

/** `a[b][0][c]` → `["a", "b", "0", "c"]`; a malformed key is reported with the key as `param`. */
function splitKey(key: string): string[] {
  const open = key.indexOf("[");
  if (open === -1) return [key];
  const parts = [key.slice(0, open)];
  const rest = key.slice(open);
  const re = /\[([^[\]]*)\]/gy;
  let consumed = 0;
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    parts.push(m[1]!);
    consumed = re.lastIndex;
  }
  if (consumed !== rest.length || parts[0] === "") {
    throw new FormParseError(`Invalid parameter name: ${key}`, key);
  }
  return parts;
}

/** Parses a form body (or query string) into nested objects/arrays of strings. */
export function parseForm(text: string): FormObject {
  const root: FormObject = {};
  for (const [key, value] of new URLSearchParams(text)) {
    const parts = splitKey(key);
    let node: FormObject | FormValue[] = root;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const last = i === parts.length - 1;
      const nextIsIndex = !last && /^\d+$/.test(parts[i + 1]!);
      if (Array.isArray(node)) {
        // Arrays arrive indexed (`lines[0]`); an empty `[]` appends, as qs does.
        const index = part === "" ? node.length : Number(part);
        if (!Number.isInteger(index) || index > 10_000) {
          throw new FormParseError(`Invalid array index in ${key}`, key);
        }
        if (last) {
          node[index] = value;
        } else {
          const existing = node[index];
          node[index] = existing ?? (nextIsIndex ? [] : {});
          node = node[index] as FormObject | FormValue[];
        }
      } else {
        if (last) {
          node[part] = value;
        } else {
          const existing = node[part];
          if (existing === undefined || typeof existing === "string") {
            node[part] = nextIsIndex ? [] : {};
          }
          node = node[part] as FormObject | FormValue[];
        }
      }
    }
  }
  return root;
}

/** A key-order-independent rendering of parsed params, for the idempotency parameter check. */
export function canonical(value: FormValue | undefined): string {
  if (value === undefined) return "undefined";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonical(v)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
}
