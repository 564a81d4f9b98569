import { parseDocument } from "yaml";
import type { ScalarTag, Tags } from "yaml";
import type { z } from "zod";
import { formatPath, joinPath, RatingInputError } from "./errors.js";
import type { RatingIssue } from "./errors.js";
import { catalogSchema, planSchema, subscriptionFileSchema, usageSchema } from "./plan-schema.js";
import type { Catalog, Plan, SubscriptionFile, Usage } from "./plan-schema.js";

/*
 * Pure parse-from-string helpers: the caller reads the file, these turn text into validated values
 * or throw a RatingInputError whose issues name the exact path of each bad field.
 */

const NUMBER_TAGS = new Set(["tag:yaml.org,2002:int", "tag:yaml.org,2002:float"]);

/**
 * YAML's core schema, except that numbers resolve to their source text. `0.05` in a file therefore
 * reaches the decimal validators as the string "0.05", never as the binary float 0.05000000000000000277…
 * (and `12345678901234567890` keeps all its digits). Booleans, null and strings resolve as usual.
 */
function exactNumberTags(tags: Tags): Tags {
  return tags.map((tag) => {
    if (typeof tag === "object" && "resolve" in tag && NUMBER_TAGS.has(tag.tag)) {
      const exact: ScalarTag = { ...(tag as ScalarTag), resolve: (source: string) => source };
      return exact;
    }
    return tag;
  });
}

/**
 * Parses YAML (or JSON, which is YAML 1.2) into plain values with numbers kept as source strings.
 * Syntax errors become issues with line and column.
 */
export function parseYamlExact(text: string): unknown {
  const doc = parseDocument(text, {
    schema: "core",
    customTags: exactNumberTags,
    uniqueKeys: true,
    prettyErrors: true,
  });
  if (doc.errors.length > 0) {
    // With prettyErrors the first line reads "<reason> at line L, column C:"; the rest is a code frame.
    throw new RatingInputError(
      doc.errors.map((e) => ({
        path: "",
        message: `invalid YAML/JSON: ${e.message.split("\n")[0]!.replace(/:$/, "")}`,
      })),
    );
  }
  return doc.toJS({ maxAliasCount: 100 }) as unknown;
}

function expectedName(expected: string): string {
  switch (expected) {
    case "object":
    case "record":
      return "a map of fields";
    case "array":
      return "a list";
    default:
      return `a ${expected}`;
  }
}

/** Converts zod issues into path-named issues, prefixed with `prefix` (e.g. `changes[1].usage`). */
export function issuesFromZod(error: z.ZodError, prefix = ""): RatingIssue[] {
  const out: RatingIssue[] = [];
  for (const issue of error.issues) {
    const path = joinPath(prefix, formatPath(issue.path));
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        out.push({ path: joinPath(path, formatPath([key])), message: "unknown field" });
    } else if (issue.code === "invalid_type") {
      const message =
        issue.input === undefined
          ? "is required"
          : issue.message.startsWith("Invalid input")
            ? `must be ${expectedName(issue.expected)}`
            : issue.message;
      out.push({ path, message });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown, prefix = ""): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true });
  if (!result.success) throw new RatingInputError(issuesFromZod(result.error, prefix));
  return result.data;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a plan catalog from YAML or JSON text. Two shapes are accepted:
 * - a catalog, `plans: [ ... ]`, alongside any other top-level sections (`meters:` …, ignored here);
 * - a single plan at the top level (a document with `prices:`), returned as a one-plan catalog.
 *
 * @throws RatingInputError naming each bad field, e.g. `plans[0].prices[2].tiers[1].up_to: must be
 * greater than the previous tier's up_to (1000)`.
 *
 * @example
 * ```ts
 * const { plans } = parseCatalog(readFileSync("plan.yaml", "utf8"));
 * ```
 */
export function parseCatalog(text: string): Catalog {
  const doc = parseYamlExact(text);
  if (!isMap(doc)) {
    throw new RatingInputError([
      { path: "", message: "expected a map with a plans: list, or a single plan" },
    ]);
  }
  if ("plans" in doc) return parseWith(catalogSchema, doc);
  if ("prices" in doc) return { plans: [parseWith(planSchema, doc)] };
  throw new RatingInputError([
    {
      path: "plans",
      message: "is required (or write a single plan with key, currency and prices at the top level)",
    },
  ]);
}

/**
 * Picks the plan to rate from a catalog: the one with `key`, or the only plan when `key` is omitted.
 * @throws RatingInputError when the key is unknown, or omitted while the catalog has several plans.
 */
export function selectPlan(catalog: Catalog, key?: string): Plan {
  if (key === undefined) {
    const [only, ...rest] = catalog.plans;
    if (only !== undefined && rest.length === 0) return only;
    const keys = catalog.plans.map((p) => p.key).join(", ");
    throw new RatingInputError([
      { path: "plans", message: `holds several plans (${keys}); choose one by key` },
    ]);
  }
  const plan = catalog.plans.find((p) => p.key === key);
  if (plan === undefined) {
    const keys = catalog.plans.map((p) => p.key).join(", ");
    throw new RatingInputError([
      { path: "plans", message: `no plan with key ${JSON.stringify(key)} (have: ${keys})` },
    ]);
  }
  return plan;
}

/**
 * Parses a usage map from JSON (or YAML) text: `{ "<meter key>": <quantity>, ... }` where each quantity
 * is a non-negative decimal string or integer. Numbers keep their exact source text.
 *
 * @example
 * ```ts
 * parseUsage('{ "api_calls": 1250000, "storage_gb": "12.5" }'); // { api_calls: "1250000", storage_gb: "12.5" }
 * ```
 */
export function parseUsage(text: string): Usage {
  return parseWith(usageSchema, parseYamlExact(text));
}

/**
 * Parses the CLI's subscription file (JSON or YAML): `started_at`, `seats`, and `changes` within the
 * period (`{ at, seats }` or `{ at, plan, usage }`).
 */
export function parseSubscription(text: string): SubscriptionFile {
  return parseWith(subscriptionFileSchema, parseYamlExact(text));
}

/**
 * Validates an already-parsed plan object (e.g. from a catalog API) and returns it normalized.
 * @throws RatingInputError naming each bad field, prefixed with `path` when given.
 */
export function validatePlan(plan: unknown, path = ""): Plan {
  return parseWith(planSchema, plan, path);
}

/** Validates an already-parsed usage map. */
export function validateUsage(usage: unknown, path = ""): Usage {
  return parseWith(usageSchema, usage, path);
}
