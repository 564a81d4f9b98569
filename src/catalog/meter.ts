import { z } from "zod";
import { canonical } from "./versioned.js";
import { eventLimits, typePattern } from "../events/limits.js";

/**
 * How a meter turns events into one number per window.
 *
 * | aggregation | over | value |
 * |---|---|---|
 * | `count` | events | number of distinct events |
 * | `sum`, `min`, `max` | `value_property` (decimal) | exact decimal |
 * | `unique_count` | `value_property` (any text) | exact distinct values (never approximate) |
 * | `latest` | `value_property` (any text) | the value of the newest event in the window |
 * | `time_weighted_sum` | gauge `value_property` (decimal) | Σ value × time it held, in `time_unit`s (GB-hours) |
 * | `time_weighted_avg` | gauge `value_property` (decimal) | time-weighted mean over the time a value was known |
 * | `peak` | gauge `value_property` (decimal) | highest level held in the window (peak concurrent seats) |
 *
 * Gauges: an event says "the level is now V" and V holds until the next event of the same
 * customer and group; the level at a window's start is carried in from the last earlier event.
 */
export const aggregations = [
  "count",
  "sum",
  "min",
  "max",
  "unique_count",
  "latest",
  "time_weighted_sum",
  "time_weighted_avg",
  "peak",
] as const;
export type Aggregation = (typeof aggregations)[number];

/** Aggregations over a gauge: computed from the ordered points, with the level carried into each window. */
export const gaugeAggregations = new Set<Aggregation>(["time_weighted_sum", "time_weighted_avg", "peak"]);

/** Aggregations whose property must hold plain decimals. */
export const numericAggregations = new Set<Aggregation>([
  "sum",
  "min",
  "max",
  "time_weighted_sum",
  "time_weighted_avg",
  "peak",
]);

export const timeUnits = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
export type TimeUnit = keyof typeof timeUnits;

/** Meter keys are also used in URLs and NATS KV keys: a narrower alphabet than event types. */
export const meterKeyPattern = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const propertyName = z
  .string({ error: "must be a string" })
  .min(1, "must not be empty")
  .max(eventLimits.propertyKeyMaxLength, `must be at most ${eventLimits.propertyKeyMaxLength} characters`);

/** Property values are stored as text; filters compare that text (YAML numbers keep their source text). */
const filterValue = z
  .union([z.string(), z.number(), z.boolean()], { error: "must be a string, number or boolean" })
  .transform((v) => String(v));

const filterSchema = z
  .strictObject({
    property: propertyName,
    equals: filterValue.optional(),
    not_equals: filterValue.optional(),
    in: z.array(filterValue).min(1, "needs at least one value").max(1000).optional(),
    not_in: z.array(filterValue).min(1, "needs at least one value").max(1000).optional(),
    exists: z.boolean({ error: "must be true or false" }).optional(),
  })
  .superRefine((f, ctx) => {
    const ops = (["equals", "not_equals", "in", "not_in", "exists"] as const).filter(
      (k) => f[k] !== undefined,
    );
    if (ops.length !== 1) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: `needs exactly one of equals, not_equals, in, not_in, exists (got ${ops.length === 0 ? "none" : ops.join(", ")})`,
      });
    }
  });
export type MeterFilter = z.output<typeof filterSchema>;

/** One meter as written in the catalog file or sent to the admin API. */
export const meterSchema = z
  .strictObject({
    key: z
      .string({ error: "must be a string" })
      .regex(
        meterKeyPattern,
        "must be 1–64 lowercase letters, digits, _ or -, starting with a letter or digit",
      ),
    name: z.string().min(1).max(200).optional(),
    description: z.string().max(2000).optional(),
    event_type: z
      .string({ error: "must be a string" })
      .max(eventLimits.typeMaxLength)
      .regex(typePattern, "must be an event type: letters, digits and _ . : / -"),
    aggregation: z.enum(aggregations, { error: `must be one of ${aggregations.join(", ")}` }),
    value_property: propertyName.optional(),
    filters: z.array(filterSchema).max(20, "at most 20 filters").optional(),
    group_by: z
      .array(propertyName)
      .max(5, "at most 5 dimensions")
      .refine((g) => new Set(g).size === g.length, "must not repeat a dimension")
      .optional(),
    /** Unit of time of `time_weighted_sum` (GB-**hours**). */
    time_unit: z.enum(Object.keys(timeUnits) as [TimeUnit, ...TimeUnit[]]).optional(),
    unit: z.string().max(32).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.aggregation === "count" && m.value_property !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["value_property"],
        message: "count meters do not read a property",
      });
    }
    if (m.aggregation !== "count" && m.value_property === undefined) {
      ctx.addIssue({ code: "custom", path: ["value_property"], message: `is required for ${m.aggregation}` });
    }
    if (m.time_unit !== undefined && m.aggregation !== "time_weighted_sum") {
      ctx.addIssue({
        code: "custom",
        path: ["time_unit"],
        message: "only time_weighted_sum meters have a time_unit",
      });
    }
  });

/** A validated meter definition. */
export type MeterDefinition = z.output<typeof meterSchema>;

/** A meter as stored: the definition plus its version (1, 2, …) and when that version was applied. */
export interface Meter extends MeterDefinition {
  version: number;
  applied_at: string;
}

/** Definitions are compared canonically (key order ignored) to decide whether applying changes anything. */
export function sameDefinition(a: MeterDefinition, b: MeterDefinition): boolean {
  return canonical(a) === canonical(b);
}
