import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CatalogInputError, parseMeters, validateMeter, validateMeters } from "./file.js";
import { aggregations, sameDefinition, type MeterDefinition } from "./meter.js";

/** The `path: message` lines of the CatalogInputError `fn` throws. */
function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof CatalogInputError) {
      expect(err.message).toBe(
        err.issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("\n"),
      );
      return err.issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
    }
    throw err;
  }
  throw new Error("expected a CatalogInputError");
}

const CATALOG = `
meters:
  - key: api_calls
    name: API calls
    description: Every request to the public API
    event_type: api_call
    aggregation: count
    group_by: [endpoint, region]
    filters:
      - property: status
        not_equals: failed
  - key: tokens_in
    event_type: llm.completion
    aggregation: sum
    value_property: input_tokens
    filters:
      - property: price_tier
        equals: 1.50
      - property: model
        in: [gpt-4, 3.5, true]
  - key: min_latency
    event_type: request
    aggregation: min
    value_property: latency_ms
    filters: [{ property: cached, exists: false }]
  - key: max_latency
    event_type: request
    aggregation: max
    value_property: latency_ms
    filters: [{ property: region, not_in: [eu-west-1, 0100] }]
  - key: monthly_active_users
    event_type: user_activity
    aggregation: unique_count
    value_property: user_id
  - key: plan_tier
    event_type: account.updated
    aggregation: latest
    value_property: tier
  - key: storage_gb_hours
    event_type: storage
    aggregation: time_weighted_sum
    value_property: gb
    time_unit: hour
    unit: GB-hours
  - key: avg-seats
    event_type: seats
    aggregation: time_weighted_avg
    value_property: seats
  - key: peak_seats
    event_type: seats
    aggregation: peak
    value_property: seats
plans: [] # another section, owned by rating
`;

describe("parseMeters: valid catalogs", () => {
  it("reads a catalog using every aggregation", () => {
    const meters = parseMeters(CATALOG);
    expect(meters.map((m) => m.key)).toEqual([
      "api_calls",
      "tokens_in",
      "min_latency",
      "max_latency",
      "monthly_active_users",
      "plan_tier",
      "storage_gb_hours",
      "avg-seats",
      "peak_seats",
    ]);
    expect(new Set(meters.map((m) => m.aggregation))).toEqual(new Set(aggregations));
    expect(meters[0]).toEqual({
      key: "api_calls",
      name: "API calls",
      description: "Every request to the public API",
      event_type: "api_call",
      aggregation: "count",
      group_by: ["endpoint", "region"],
      filters: [{ property: "status", not_equals: "failed" }],
    });
    expect(meters[6]).toEqual({
      key: "storage_gb_hours",
      event_type: "storage",
      aggregation: "time_weighted_sum",
      value_property: "gb",
      time_unit: "hour",
      unit: "GB-hours",
    });
  });

  it("keeps filter values as the text written: numbers keep their source digits, booleans become text", () => {
    const meters = parseMeters(CATALOG);
    expect(meters[1]!.filters).toEqual([
      { property: "price_tier", equals: "1.50" },
      { property: "model", in: ["gpt-4", "3.5", "true"] },
    ]);
    expect(meters[2]!.filters).toEqual([{ property: "cached", exists: false }]);
    expect(meters[3]!.filters).toEqual([{ property: "region", not_in: ["eu-west-1", "0100"] }]);
  });

  it("reads the same catalog written as JSON", () => {
    const json = JSON.stringify({
      meters: [
        {
          key: "api_calls",
          event_type: "api_call",
          aggregation: "count",
          filters: [{ property: "code", equals: 200 }],
        },
      ],
    });
    expect(parseMeters(json)).toEqual([
      {
        key: "api_calls",
        event_type: "api_call",
        aggregation: "count",
        filters: [{ property: "code", equals: "200" }],
      },
    ]);
  });

  it("reads the meters of the shipped example catalog", () => {
    const text = readFileSync(new URL("../../examples/plan.yaml", import.meta.url), "utf8");
    const meters = parseMeters(text);
    expect(meters.length).toBeGreaterThan(0);
    expect(meters.map((m) => m.key)).toContain("api_calls");
  });

  it("accepts an empty list of meters", () => {
    expect(parseMeters("meters: []")).toEqual([]);
  });
});

describe("parseMeters: errors name the exact field", () => {
  const meter = (extra: string, key = "m") => `  - key: ${key}\n    event_type: e\n${extra}`;
  const doc = (...meters: string[]) => `meters:\n${meters.join("")}`;

  it("names an unknown aggregation", () => {
    const issues = issuesOf(() =>
      parseMeters(
        doc(
          meter("    aggregation: count\n", "a"),
          meter("    aggregation: average\n    value_property: v\n", "b"),
        ),
      ),
    );
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^meters\[1\]\.aggregation: must be one of count, sum, .*peak$/);
  });

  it("rejects a count meter that reads a property", () => {
    expect(
      issuesOf(() => parseMeters(doc(meter("    aggregation: count\n    value_property: n\n")))),
    ).toEqual(["meters[0].value_property: count meters do not read a property"]);
  });

  it("requires value_property for every aggregation other than count", () => {
    for (const agg of aggregations.filter((a) => a !== "count")) {
      expect(
        issuesOf(() => parseMeters(doc(meter(`    aggregation: ${agg}\n`)))),
        agg,
      ).toEqual([`meters[0].value_property: is required for ${agg}`]);
    }
  });

  it("rejects time_unit on a meter that is not time_weighted_sum", () => {
    const text = doc(
      meter("    aggregation: count\n", "a"),
      meter("    aggregation: time_weighted_sum\n    value_property: gb\n    time_unit: hour\n", "b"),
      meter("    aggregation: time_weighted_avg\n    value_property: gb\n    time_unit: hour\n", "c"),
    );
    expect(issuesOf(() => parseMeters(text))).toEqual([
      "meters[2].time_unit: only time_weighted_sum meters have a time_unit",
    ]);
  });

  it("rejects an unknown time_unit", () => {
    const issues = issuesOf(() =>
      parseMeters(
        doc(meter("    aggregation: time_weighted_sum\n    value_property: gb\n    time_unit: week\n")),
      ),
    );
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^meters\[0\]\.time_unit: /);
  });

  it("requires exactly one operator per filter", () => {
    const none = issuesOf(() =>
      parseMeters(doc(meter("    aggregation: count\n    filters:\n      - property: status\n"))),
    );
    expect(none).toEqual([
      "meters[0].filters[0]: needs exactly one of equals, not_equals, in, not_in, exists (got none)",
    ]);
    const two = issuesOf(() =>
      parseMeters(
        doc(
          meter(
            "    aggregation: count\n    filters:\n      - { property: a, equals: x }\n      - { property: status, equals: ok, not_in: [failed] }\n",
          ),
        ),
      ),
    );
    expect(two).toEqual([
      "meters[0].filters[1]: needs exactly one of equals, not_equals, in, not_in, exists (got equals, not_in)",
    ]);
  });

  it("rejects bad filter values with their path", () => {
    const issues = issuesOf(() =>
      parseMeters(
        doc(
          meter(
            "    aggregation: count\n    filters:\n      - { property: a, in: [] }\n      - { property: b, equals: { nested: 1 } }\n      - { property: c, exists: yes }\n",
          ),
        ),
      ),
    );
    expect(issues.map((i) => i.split(":")[0])).toEqual([
      "meters[0].filters[0].in",
      "meters[0].filters[1].equals",
      "meters[0].filters[2].exists",
    ]);
  });

  it("names a duplicate meter key and where it first appeared", () => {
    const text = doc(
      meter("    aggregation: count\n", "api_calls"),
      meter("    aggregation: count\n", "b"),
      meter("    aggregation: count\n", "c"),
      meter("    aggregation: sum\n    value_property: n\n", "api_calls"),
    );
    expect(issuesOf(() => parseMeters(text))).toEqual([
      "meters[3].key: duplicate meter key (also meters[0])",
    ]);
  });

  it("names unknown (misspelt) fields", () => {
    const issues = issuesOf(() => parseMeters(doc(meter("    agregation: count\n"))));
    expect(issues).toContain("meters[0].agregation: unknown field");
    expect(issues.find((i) => i.startsWith("meters[0].aggregation: "))).toMatch(/must be one of count/);
    const inFilter = issuesOf(() =>
      parseMeters(doc(meter("    aggregation: count\n    filters: [{ property: a, equal: x }]\n"))),
    );
    expect(inFilter).toContain("meters[0].filters[0].equal: unknown field");
  });

  it("rejects meter keys outside [a-z0-9_-], longer than 64 or starting with _ or -", () => {
    for (const key of [
      "API_calls",
      "api calls",
      "api.calls",
      "_api",
      "-api",
      "a".repeat(65),
      "api/calls",
      '""',
    ]) {
      const issues = issuesOf(() => parseMeters(doc(meter("    aggregation: count\n", key))));
      expect(issues, key).toHaveLength(1);
      expect(issues[0], key).toMatch(/^meters\[0\]\.key: must be 1–64 lowercase letters/);
    }
    expect(parseMeters(doc(meter("    aggregation: count\n", "a".repeat(64))))[0]!.key).toBe("a".repeat(64));
    expect(parseMeters(doc(meter("    aggregation: count\n", "0-a_b")))[0]!.key).toBe("0-a_b");
  });

  it("rejects repeated group_by dimensions and more than five", () => {
    expect(
      issuesOf(() => parseMeters(doc(meter("    aggregation: count\n    group_by: [region, region]\n")))),
    ).toEqual(["meters[0].group_by: must not repeat a dimension"]);
    const six = issuesOf(() =>
      parseMeters(doc(meter("    aggregation: count\n    group_by: [a, b, c, d, e, f]\n"))),
    );
    expect(six).toEqual(["meters[0].group_by: at most 5 dimensions"]);
  });

  it("reports problems in several meters at once", () => {
    const text = doc(
      meter("    aggregation: count\n    value_property: n\n", "a"),
      meter("    aggregation: sum\n", "b"),
    );
    expect(issuesOf(() => parseMeters(text))).toEqual([
      "meters[0].value_property: count meters do not read a property",
      "meters[1].value_property: is required for sum",
    ]);
  });

  it("reports invalid YAML with its line and column", () => {
    const issues = issuesOf(() => parseMeters("meters:\n  - key: a\n    event_type: [unclosed\n"));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^invalid YAML\/JSON: .*line \d+, column \d+/);
    const dupKey = issuesOf(() => parseMeters("meters:\n  - key: a\n    key: b\n    event_type: e\n"));
    expect(dupKey[0]).toMatch(/^invalid YAML\/JSON: .*line 3, column 5/);
  });

  it("requires a meters: list", () => {
    for (const text of ["plans: []", "", "# only a comment", "- key: a", "42"]) {
      expect(
        issuesOf(() => parseMeters(text)),
        JSON.stringify(text),
      ).toEqual(["meters: is required: a list of meters"]);
    }
    for (const text of ["meters: null", "meters: {key: a}", "meters: api_calls"]) {
      expect(
        issuesOf(() => parseMeters(text)),
        text,
      ).toEqual(["meters: must be a list of meters"]);
    }
    expect(issuesOf(() => parseMeters("meters: [42]"))[0]).toMatch(/^meters\[0\]: /);
  });

  it("refuses more than 1000 meters", () => {
    const many = {
      meters: Array.from({ length: 1001 }, (_, i) => ({
        key: `m${i}`,
        event_type: "e",
        aggregation: "count",
      })),
    };
    expect(issuesOf(() => validateMeters(many))).toEqual(["meters: at most 1000 meters"]);
    expect(validateMeters({ meters: many.meters.slice(0, 1000) })).toHaveLength(1000);
  });
});

describe("validateMeter (admin API body)", () => {
  it("accepts a valid meter and reports paths relative to the meter", () => {
    expect(validateMeter({ key: "api_calls", event_type: "api_call", aggregation: "count" })).toEqual({
      key: "api_calls",
      event_type: "api_call",
      aggregation: "count",
    });
    // Every problem at once, unknown fields included.
    expect(
      issuesOf(() =>
        validateMeter({
          key: "x",
          event_type: "e",
          aggregation: "sum",
          filters: [{ property: "a" }],
          extra: 1,
        }),
      ).sort(),
    ).toEqual([
      "extra: unknown field",
      "filters[0]: needs exactly one of equals, not_equals, in, not_in, exists (got none)",
      "value_property: is required for sum",
    ]);
    expect(issuesOf(() => validateMeter({ key: "x", event_type: "e", aggregation: "sum" }))).toEqual([
      "value_property: is required for sum",
    ]);
    expect(issuesOf(() => validateMeter({ key: "x", event_type: "bad type", aggregation: "count" }))).toEqual(
      ["event_type: must be an event type: letters, digits and _ . : / -"],
    );
  });

  it("rejects what is not a meter", () => {
    expect(issuesOf(() => validateMeter(null)).length).toBeGreaterThan(0);
    expect(issuesOf(() => validateMeter([])).length).toBeGreaterThan(0);
    const issues = issuesOf(() => validateMeter({}));
    expect(issues.map((i) => i.split(":")[0])).toEqual(["key", "event_type", "aggregation"]);
    expect(issues.slice(0, 2)).toEqual(["key: is required", "event_type: is required"]);
  });

  it("keeps JSON filter values as text", () => {
    const m = validateMeter({
      key: "x",
      event_type: "e",
      aggregation: "count",
      filters: [{ property: "ok", in: [true, 2, "three"] }],
    });
    expect(m.filters).toEqual([{ property: "ok", in: ["true", "2", "three"] }]);
  });
});

describe("sameDefinition", () => {
  const base: MeterDefinition = {
    key: "api_calls",
    event_type: "api_call",
    aggregation: "sum",
    value_property: "n",
    filters: [{ property: "status", equals: "ok" }],
    group_by: ["region"],
  };

  it("ignores key order, at every level, and fields left undefined", () => {
    const reordered: MeterDefinition = {
      group_by: ["region"],
      filters: [{ equals: "ok", property: "status" }],
      value_property: "n",
      aggregation: "sum",
      event_type: "api_call",
      key: "api_calls",
      unit: undefined,
    };
    expect(sameDefinition(base, reordered)).toBe(true);
    // A YAML file and its JSON twin describe the same meter.
    const [fromYaml] = parseMeters(
      "meters:\n  - key: api_calls\n    aggregation: sum\n    event_type: api_call\n    value_property: n\n    group_by: [region]\n    filters: [{ equals: ok, property: status }]\n",
    );
    expect(sameDefinition(base, fromYaml!)).toBe(true);
  });

  it("sees every real change", () => {
    const changes: Partial<MeterDefinition>[] = [
      { aggregation: "max" },
      { value_property: "m" },
      { event_type: "api_call2" },
      { filters: [{ property: "status", equals: "OK" }] },
      { filters: [{ property: "status", not_equals: "ok" }] },
      { filters: undefined },
      { group_by: ["region", "endpoint"] },
      { name: "API calls" },
      { unit: "calls" },
    ];
    for (const change of changes) {
      expect(sameDefinition(base, { ...base, ...change }), JSON.stringify(change)).toBe(false);
    }
    const a = parseMeters(
      "meters:\n  - { key: k, event_type: e, aggregation: count, filters: [{ property: p, equals: 1.50 }] }",
    );
    const b = parseMeters(
      "meters:\n  - { key: k, event_type: e, aggregation: count, filters: [{ property: p, equals: 1.5 }] }",
    );
    expect(sameDefinition(a[0]!, b[0]!)).toBe(false);
  });

  it("is true exactly when the canonical JSON is equal (fast-check)", () => {
    const filter = fc.record(
      { property: fc.constantFrom("a", "b"), equals: fc.constantFrom("x", "y") },
      { requiredKeys: ["property"] },
    );
    const def = fc.record(
      {
        key: fc.constantFrom("k1", "k2"),
        event_type: fc.constantFrom("e1", "e2"),
        aggregation: fc.constantFrom("count" as const, "sum" as const),
        value_property: fc.constantFrom("v", "w"),
        filters: fc.array(filter, { maxLength: 2 }),
        name: fc.constantFrom("A", "B"),
      },
      { requiredKeys: ["key", "event_type", "aggregation"] },
    );
    const shuffled = (m: MeterDefinition) =>
      Object.fromEntries(Object.entries(m).reverse()) as unknown as MeterDefinition;
    const sorted = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(sorted)
        : v !== null && typeof v === "object"
          ? Object.fromEntries(
              Object.entries(v)
                .sort(([x], [y]) => (x < y ? -1 : 1))
                .map(([k, x]) => [k, sorted(x)]),
            )
          : v;
    fc.assert(
      fc.property(def, def, (a, b) => {
        expect(sameDefinition(a, shuffled(a))).toBe(true);
        expect(sameDefinition(a, b)).toBe(JSON.stringify(sorted(a)) === JSON.stringify(sorted(b)));
      }),
    );
  });
});
