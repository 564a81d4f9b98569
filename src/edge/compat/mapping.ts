import type { FieldRenamer } from "../ingest.js";

/**
 * A {@link FieldRenamer} from a table of top-level names and a function naming a property key
 * (`null` for the whole properties object); `prefix(index)` is prepended (e.g. `events[3].`).
 */
export function renamer(
  map: Record<string, string>,
  property: (key: string | null) => string,
  prefix: (index: number) => string = () => "",
): FieldRenamer {
  return (field, index) => {
    let name: string;
    if (field === "properties") name = property(null);
    else if (field.startsWith("properties.")) name = property(field.slice("properties.".length));
    else name = Object.hasOwn(map, field) ? map[field]! : field;
    return prefix(index) + name;
  };
}

/** The value as a plain JSON object, or null. */
export function asObject(v: unknown): Record<string, unknown> | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

/**
 * A copy of `obj` without `omit`, as an object without prototype: keys such as `__proto__`
 * stay ordinary keys (on `{}` an assignment to `__proto__` sets the prototype and the key vanishes).
 */
export function withoutKey(obj: Record<string, unknown>, omit: string): Record<string, unknown> {
  const out = Object.create(null) as Record<string, unknown>;
  for (const k of Object.keys(obj)) if (k !== omit) out[k] = obj[k];
  return out;
}
