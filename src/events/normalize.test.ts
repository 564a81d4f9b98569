import Big from "big.js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { FieldError } from "../lib/errors.js";
import { exactNumber, normalizeEvent, parseRfc3339 } from "./normalize.js";
import { validateEvents } from "./validate.js";

const now = Date.parse("2026-11-25T12:00:00Z");
const ctx = { nowMs: now, backfillDays: 35 };

function check(raw: unknown) {
  const errors: FieldError[] = [];
  const e = normalizeEvent(raw, 0, ctx, errors);
  return { e, errors };
}

describe("normalizeEvent happy", () => {
  it("defaults time to receive time and flattens nested properties", () => {
    const { e, errors } = check({
      id: "a",
      type: "api_call",
      customer: "c",
      properties: { a: { b: 1, c: "x" }, d: true, n: null },
    });
    expect(errors).toEqual([]);
    expect(e).toMatchObject({
      timeMs: now,
      receivedMs: now,
      propKeys: ["a.b", "a.c", "d"],
      propValues: ["1", "x", "true"],
    });
  });
  it("accepts RFC 3339 with offset and epoch ms", () => {
    expect(check({ id: "a", type: "t", customer: "c", time: "2026-11-25T13:00:00+01:00" }).e?.timeMs).toBe(
      now,
    );
    expect(check({ id: "a", type: "t", customer: "c", time: now - 1000 }).e?.timeMs).toBe(now - 1000);
  });
  it("keeps decimal strings and exact numbers unchanged", () => {
    const { e } = check({
      id: "a",
      type: "t",
      customer: "c",
      properties: { a: "0.1000000000000000000001", b: 0.1, c: 123.456, d: 1e-7 },
    });
    expect(e?.propValues).toEqual(["0.1000000000000000000001", "0.1", "123.456", "0.0000001"]);
  });
});

describe("normalizeEvent errors", () => {
  it("reports every bad field at once, naming each", () => {
    const { e, errors } = check({
      id: "",
      type: "bad type!",
      customer: 5,
      time: "yesterday",
      properties: { x: [1], y: 0.30000000000000004 },
    });
    expect(e).toBeNull();
    expect(errors.map((x) => [x.field, x.code])).toEqual([
      ["id", "required"],
      ["customer", "invalid_type"],
      ["type", "invalid_format"],
      ["time", "invalid_format"],
      ["properties.x", "invalid_type"],
      ["properties.y", "imprecise_number"],
    ]);
    for (const x of errors) expect(x.message.length).toBeGreaterThan(5);
  });
  it("rejects times too far in the future or before the backfill horizon", () => {
    expect(check({ id: "a", type: "t", customer: "c", time: now + 5 * 60_000 + 1 }).errors[0]?.code).toBe(
      "too_far_in_future",
    );
    expect(check({ id: "a", type: "t", customer: "c", time: now + 5 * 60_000 }).errors).toEqual([]);
    expect(
      check({ id: "a", type: "t", customer: "c", time: now - 35 * 86_400_000 - 1 }).errors[0]?.code,
    ).toBe("too_old");
    expect(check({ id: "a", type: "t", customer: "c", time: "2026-02-30T00:00:00Z" }).errors[0]?.code).toBe(
      "invalid_format",
    );
  });
  it("enforces the documented limits", () => {
    expect(check({ id: "x".repeat(257), type: "t", customer: "c" }).errors[0]).toMatchObject({
      field: "id",
      code: "too_long",
    });
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i]));
    expect(check({ id: "a", type: "t", customer: "c", properties: many }).errors[0]).toMatchObject({
      code: "too_many",
    });
    expect(
      check({ id: "a", type: "t", customer: "c", properties: { v: "x".repeat(4097) } }).errors[0],
    ).toMatchObject({ code: "too_long" });
    expect(check([1, 2]).errors[0]).toMatchObject({ code: "invalid_type" });
  });
});

describe("validateEvents", () => {
  it("keeps the first of repeated ids and counts the rest as duplicates", () => {
    const r = validateEvents(
      [
        { id: "a", type: "t", customer: "c", time: now - 1 },
        { id: "a", type: "t", customer: "c", time: now - 2 },
        { id: "b", type: "t", customer: "c" },
      ],
      ctx,
    );
    expect(r.errors).toEqual([]);
    expect(r.duplicates).toBe(1);
    expect(r.events.map((e) => [e.id, e.timeMs])).toEqual([
      ["a", now - 1],
      ["b", now],
    ]);
  });
});

describe("properties", () => {
  it("exactNumber returns the decimal the client wrote, or refuses", () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (n) => {
        const s = exactNumber(n);
        if (s !== null) expect(new Big(s).eq(new Big(String(n)))).toBe(true);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: -1e9, max: 1e9 }), fc.integer({ min: 0, max: 6 }), (i, scale) => {
        const text = new Big(i).div(10 ** scale).toFixed();
        expect(exactNumber(Number(text))).toBe(new Big(text).toFixed());
      }),
    );
  });
  it("parseRfc3339 agrees with Date for every valid instant", () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date("1971-01-01"), max: new Date("2999-12-31"), noInvalidDate: true }),
        (d) => {
          expect(parseRfc3339(d.toISOString())).toBe(d.getTime());
        },
      ),
    );
  });
  it("parseRfc3339 reads every timestamp as the regex and Date.parse did (fast path included)", () => {
    // The parser before its fast path, kept as the reference.
    const reference = (t: string): number | null => {
      const m =
        /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/.exec(t);
      if (m === null) return null;
      const [, y, mo, d, h, mi, se] = m;
      const month = Number(mo);
      const day = Number(d);
      if (
        month < 1 ||
        month > 12 ||
        day < 1 ||
        day > 31 ||
        Number(h) > 23 ||
        Number(mi) > 59 ||
        Number(se) > 60
      )
        return null;
      const ms = Date.parse(t.replace(" ", "T"));
      if (Number.isNaN(ms)) return null;
      if (new Date(Date.UTC(Number(y), month - 1, day)).getUTCDate() !== day) return null;
      return ms;
    };
    const num = (n: number, w: number) => String(n).padStart(w, "0");
    const stamp = fc
      .record({
        y: fc.oneof(fc.integer({ min: 0, max: 9999 }), fc.constantFrom(1900, 2000, 2024, 2026, 2100)),
        mo: fc.integer({ min: 0, max: 13 }),
        d: fc.integer({ min: 0, max: 32 }),
        h: fc.integer({ min: 0, max: 25 }),
        mi: fc.integer({ min: 0, max: 60 }),
        se: fc.integer({ min: 0, max: 61 }),
        frac: fc.constantFrom("", ".", ".1", ".12", ".123", ".1234", ".x1", ".123456789", "1"),
        sep: fc.constantFrom("T", "t", " ", "_"),
        zone: fc.constantFrom("Z", "z", "+01:00", "-05:30", "", "ZZ"),
      })
      .map(
        (r) =>
          `${num(r.y, 4)}-${num(r.mo, 2)}-${num(r.d, 2)}${r.sep}${num(r.h, 2)}:${num(r.mi, 2)}:${num(r.se, 2)}${r.frac}${r.zone}`,
      );
    fc.assert(
      fc.property(fc.oneof(stamp, fc.string({ maxLength: 26 })), (t) => {
        expect(parseRfc3339(t)).toBe(reference(t));
      }),
      { numRuns: 5_000 },
    );
    for (const t of [
      "2024-02-29T00:00:00Z",
      "2023-02-29T00:00:00Z",
      "2100-02-29T10:00:00.5Z",
      "0099-01-01T00:00:00Z",
    ]) {
      expect(parseRfc3339(t)).toBe(reference(t));
    }
  });
  it("a million 0.1 quantities sum to exactly 100000", () => {
    const v = exactNumber(0.1)!;
    let sum = new Big(0);
    for (let i = 0; i < 1_000_000; i++) sum = sum.plus(v);
    expect(sum.toFixed()).toBe("100000");
  });
});

describe("numbers beyond exact JSON range", () => {
  it("refuses integers beyond 2^53 (send them as strings)", () => {
    expect(exactNumber(1e21)).toBeNull();
    expect(exactNumber(2 ** 53)).toBeNull();
    expect(exactNumber(2 ** 53 - 1)).toBe("9007199254740991");
  });
});

describe("inexactNumbers", () => {
  it("finds only numbers outside strings that JSON.parse would round", async () => {
    const { inexactNumbers } = await import("./decode.js");
    expect(inexactNumbers('{"a":0.1,"b":"12345678901234567890","c":9007199254740991}')).toEqual([]);
    expect(
      inexactNumbers('{"a":12345678901234567890,"b":"x\\"1.00000000000000001"}').map((x) => x.literal),
    ).toEqual(["12345678901234567890"]);
    expect(inexactNumbers('{"a":1.00000000000000001234}').map((x) => x.literal)).toEqual([
      "1.00000000000000001234",
    ]);
    expect(inexactNumbers('{"a":1.50000000000000000000}')).toEqual([]);
  });
});

describe("normalizeEvent invalid_unicode", () => {
  const lone = "x-\ud800";
  it("refuses a lone surrogate in every string that reaches the bus, naming the field", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ id: lone, type: "t", customer: "c" }, "id"],
      [{ id: "a", type: "t", customer: "\udc00" }, "customer"],
      [{ id: "a", type: `t${lone}`, customer: "c" }, "type"],
      [{ id: "a", type: "t", customer: "c", source: lone }, "source"],
      [{ id: "a", type: "t", customer: "c", properties: { [lone]: "1" } }, `properties.${lone}`],
      [{ id: "a", type: "t", customer: "c", properties: { q: "1\ud83d" } }, "properties.q"],
      [{ id: "a", type: "t", customer: "c", properties: { a: { b: lone } } }, "properties.a.b"],
    ];
    for (const [raw, field] of cases) {
      const { e, errors } = check(raw);
      expect(e).toBeNull();
      expect(errors).toEqual([{ index: 0, field, code: "invalid_unicode", message: expect.any(String) }]);
    }
  });
  it("accepts well-formed non-ASCII text, surrogate pairs included", () => {
    const { e, errors } = check({
      id: "\u{1f600}",
      type: "t",
      customer: "東京",
      source: "\u{10ffff}",
      properties: { "ключ-\u{1f680}": "✓\u{1f600}" },
    });
    expect(errors).toEqual([]);
    expect(e).toMatchObject({ id: "\u{1f600}", propKeys: ["ключ-\u{1f680}"], propValues: ["✓\u{1f600}"] });
  });
});

describe("normalizeEvent property keys mean one thing", () => {
  it("refuses keys that collide once nested objects are flattened", () => {
    const { e, errors } = check(
      JSON.parse('{"id":"a","type":"t","customer":"c","properties":{"a.b":"1","a":{"b":"2"}}}'),
    );
    expect(e).toBeNull();
    expect(errors).toEqual([
      { index: 0, field: "properties.a.b", code: "duplicate_key", message: expect.any(String) },
    ]);
    const deep = check({
      id: "a",
      type: "t",
      customer: "c",
      properties: { x: { "y.z": 1, y: { z: 2 } }, "x.y.z": 3, ok: 1 },
    });
    expect(deep.errors.map((x) => [x.field, x.code])).toEqual([["properties.x.y.z", "duplicate_key"]]);
  });
  it("keeps dotted keys that do not collide", () => {
    const { e, errors } = check({ id: "a", type: "t", customer: "c", properties: { "a.b": 1, a: { c: 2 } } });
    expect(errors).toEqual([]);
    expect(e?.propKeys).toEqual(["a.b", "a.c"]);
  });
  it("refuses __proto__ at any depth with reserved_key", () => {
    const top = check(JSON.parse('{"id":"a","type":"t","customer":"c","properties":{"__proto__":"1"}}'));
    expect(top.errors).toEqual([
      { index: 0, field: "properties.__proto__", code: "reserved_key", message: expect.any(String) },
    ]);
    const nested = check(
      JSON.parse('{"id":"a","type":"t","customer":"c","properties":{"a":{"__proto__":{"b":"1"}}}}'),
    );
    expect(nested.errors.map((x) => [x.field, x.code])).toEqual([["properties.a.__proto__", "reserved_key"]]);
  });
  it("keeps constructor and prototype as ordinary keys, exactly", () => {
    const { e, errors } = check(
      JSON.parse(
        '{"id":"a","type":"t","customer":"c","properties":{"constructor":"1","prototype":{"x":"2"},"a":{"constructor":"3","toString":"4"}}}',
      ),
    );
    expect(errors).toEqual([]);
    expect(e?.propKeys).toEqual(["constructor", "prototype.x", "a.constructor", "a.toString"]);
    expect(e?.propValues).toEqual(["1", "2", "3", "4"]);
  });
  it("reads own keys only (an adapter's object may inherit enumerable keys)", () => {
    const props = Object.create({ inherited: "x" }) as Record<string, unknown>;
    props.own = "1";
    expect(check({ id: "a", type: "t", customer: "c", properties: props }).e?.propKeys).toEqual(["own"]);
  });
});

describe("normalizeEvent unknown fields", () => {
  it("refuses a misspelt top-level field, naming it", () => {
    const { e, errors } = check({ id: "a", type: "t", customer: "c", propertes: { q: 1 } });
    expect(e).toBeNull();
    expect(errors).toEqual([
      { index: 0, field: "propertes", code: "unknown_field", message: expect.any(String) },
    ]);
    expect(
      check(JSON.parse('{"id":"a","type":"t","customer":"c","__proto__":{"x":1}}')).errors.map((x) => [
        x.field,
        x.code,
      ]),
    ).toEqual([["__proto__", "unknown_field"]]);
  });
  it("ignores keys an adapter set to undefined", () => {
    const { e, errors } = check({ id: "a", type: "t", customer: "c", time: undefined, extra: undefined });
    expect(errors).toEqual([]);
    expect(e?.id).toBe("a");
  });
});
