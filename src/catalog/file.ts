import { z } from "zod";
import { duplicateKeyIssues, issuesFromZod, parseYamlExact, type RatingIssue } from "../rating/index.js";
import { meterSchema, type MeterDefinition } from "./meter.js";

/** Bad catalog input; every issue names the exact path of the bad field (`meters[2].aggregation`). */
export class CatalogInputError extends Error {
  override name = "CatalogInputError";
  constructor(readonly issues: readonly RatingIssue[]) {
    super(issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("\n"));
  }
}

/**
 * The `meters:` section of a catalog document. Other sections (`plans:`, read by rating) are
 * left to their owners.
 */
const metersSection = z
  .looseObject({
    meters: z.array(meterSchema, { error: "must be a list of meters" }).max(1000, "at most 1000 meters"),
  })
  .superRefine(duplicateKeyIssues("meters", "meter"));

/**
 * Parses the meters of a catalog file (YAML or JSON).
 * @throws CatalogInputError naming each bad field.
 * @example
 * ```ts
 * const meters = parseMeters(readFileSync("catalog.yaml", "utf8"));
 * await store.apply(meters);
 * ```
 */
export function parseMeters(text: string): MeterDefinition[] {
  return validateMeters(parseCatalogText(text));
}

/** YAML or JSON text of a catalog document, parsed with numbers kept exact. */
export function parseCatalogText(text: string): unknown {
  try {
    return parseYamlExact(text);
  } catch (err: unknown) {
    throw new CatalogInputError(
      (err as { issues?: RatingIssue[] }).issues ?? [{ path: "", message: String(err) }],
    );
  }
}

/** Validates an already-parsed catalog document (`{ meters: [...] }`). */
export function validateMeters(doc: unknown): MeterDefinition[] {
  if (doc === null || typeof doc !== "object" || Array.isArray(doc) || !("meters" in doc)) {
    throw new CatalogInputError([{ path: "meters", message: "is required: a list of meters" }]);
  }
  const r = metersSection.safeParse(doc, { reportInput: true });
  if (!r.success) throw new CatalogInputError(issuesFromZod(r.error));
  return r.data.meters;
}

/** Validates one meter (the admin API's `PUT /v1/meters/:key` body). */
export function validateMeter(body: unknown): MeterDefinition {
  const r = meterSchema.safeParse(body, { reportInput: true });
  if (!r.success) throw new CatalogInputError(issuesFromZod(r.error));
  return r.data;
}
