/** One problem with one field of a plan, usage map or rating input. */
export interface RatingIssue {
  /** Where the bad field is, e.g. `plans[0].prices[2].tiers[1].up_to`; empty for the document itself. */
  readonly path: string;
  /** Why it is bad, e.g. `must be greater than the previous tier's up_to (1000)`. */
  readonly message: string;
}

/**
 * Bad input to rating: an invalid plan, usage map or subscription timeline.
 * The message lists every issue as `path: message`, one per line, so a CLI can print it as is.
 *
 * @example
 * ```ts
 * try { parseCatalog(text); } catch (err) {
 *   if (err instanceof RatingInputError) for (const i of err.issues) console.error(`${i.path}: ${i.message}`);
 * }
 * ```
 */
export class RatingInputError extends Error {
  override name = "RatingInputError";
  readonly issues: readonly RatingIssue[];

  constructor(issues: readonly RatingIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.issues = issues;
  }
}

/** `path: message`, or just the message when the path is empty. */
export function formatIssue(issue: RatingIssue): string {
  return issue.path === "" ? issue.message : `${issue.path}: ${issue.message}`;
}

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/**
 * Formats a property path the way a person reads it: `plans[0].prices[2].unit_amount`.
 * Keys that are not plain identifiers are quoted: `usage["api calls"]`.
 */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else {
      const k = String(key);
      if (IDENT_RE.test(k)) out += out === "" ? k : `.${k}`;
      else out += `[${JSON.stringify(k)}]`;
    }
  }
  return out;
}

/** Joins a prefix and a relative path: `joinPath("plans[0]", "prices[1]") === "plans[0].prices[1]"`. */
export function joinPath(prefix: string, rest: string): string {
  if (prefix === "") return rest;
  if (rest === "") return prefix;
  return rest.startsWith("[") ? `${prefix}${rest}` : `${prefix}.${rest}`;
}
