import { describe, expect, it } from "vitest";
import { tally } from "../gen/proto.js";
import { TallyValidationError } from "./errors.js";
import { decodeEvents, encodeBatch, encodeEvent } from "./event.js";

const now = Date.parse("2026-11-25T10:00:00.000Z");

function decodeOne(e: Parameters<typeof encodeEvent>[0], source?: string) {
  return tally.v1.Event.decode(encodeEvent(e, now, source).bytes);
}

function reason(fn: () => unknown): { field: string; reason: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof TallyValidationError) return { field: err.field, reason: err.reason };
    throw err;
  }
  throw new Error("did not throw");
}

describe("encodeEvent", () => {
  it("assigns a UUIDv7 id and the track time, keeps a given id", () => {
    const a = decodeOne({ type: "api_call", customer: "acme" });
    expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(Number(a.timeMs)).toBe(now);
    expect(a.time).toBe("");
    expect(decodeOne({ id: "req-1", type: "t", customer: "c" }).id).toBe("req-1");
  });

  it("takes Date, epoch ms and RFC 3339 times as given", () => {
    expect(Number(decodeOne({ type: "t", customer: "c", time: new Date(now - 5) }).timeMs)).toBe(now - 5);
    expect(Number(decodeOne({ type: "t", customer: "c", time: now - 7 }).timeMs)).toBe(now - 7);
    const s = decodeOne({ type: "t", customer: "c", time: "2026-11-25T09:00:00+01:00" });
    expect(s.time).toBe("2026-11-25T09:00:00+01:00");
    expect(Number(s.timeMs)).toBe(0);
  });

  it("converts numbers to exact decimal strings and booleans to true/false", () => {
    const e = decodeOne({
      type: "t",
      customer: "c",
      properties: { a: 12, b: 1.5, c: 1e-7, d: -0.25, e: true, f: false, g: "0.30", h: 9007199254740991 },
    });
    expect(e.properties).toEqual({
      a: "12",
      b: "1.5",
      c: "0.0000001",
      d: "-0.25",
      e: "true",
      f: "false",
      g: "0.30",
      h: "9007199254740991",
    });
  });

  it("refuses numbers without an exact decimal form with a typed error", () => {
    for (const v of [NaN, Infinity, -Infinity, 2 ** 53, 0.1 + 0.2]) {
      expect(
        reason(() => encodeEvent({ type: "t", customer: "c", properties: { q: v } }, now, undefined)),
      ).toEqual({
        field: "properties.q",
        reason: "imprecise_number",
      });
    }
  });

  it("names the field of every other mistake", () => {
    const cases: [unknown, string, string][] = [
      [{ customer: "c" }, "type", "required"],
      [{ type: "bad type", customer: "c" }, "type", "invalid_format"],
      [{ type: "t", customer: "" }, "customer", "required"],
      [{ type: "t", customer: "c", id: "x".repeat(257) }, "id", "too_long"],
      [{ type: "t", customer: "c", time: "yesterday" }, "time", "invalid_format"],
      [{ type: "t", customer: "c", time: -1 }, "time", "invalid_format"],
      [{ type: "t", customer: "c", time: new Date(NaN) }, "time", "invalid_format"],
      [{ type: "t", customer: "c", properties: { o: { nested: 1 } } }, "properties.o", "invalid_type"],
      [{ type: "t", customer: "c", properties: { "": "x" } }, "properties.", "invalid_key"],
      [{ type: "t", customer: "c", properties: { v: "x".repeat(4097) } }, "properties.v", "too_long"],
      [
        {
          type: "t",
          customer: "c",
          properties: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 1])),
        },
        "properties",
        "too_many",
      ],
    ];
    for (const [e, field, why] of cases) {
      expect(reason(() => encodeEvent(e as never, now, undefined))).toEqual({ field, reason: why });
    }
  });

  it("refuses strings that are not well-formed Unicode, as the server does (invalid_unicode)", () => {
    // Encoded, a lone surrogate becomes bytes the server cannot decode as UTF-8: the whole
    // batch, every other tracked event included, would be refused.
    const lone = "x-\ud800";
    const cases: [unknown, string][] = [
      [{ type: "t", customer: "c", id: lone }, "id"],
      [{ type: "t", customer: "\udc00" }, "customer"],
      [{ type: "t", customer: "c", source: lone }, "source"],
      [{ type: "t", customer: "c", properties: { [lone]: "1" } }, `properties.${lone}`],
      [{ type: "t", customer: "c", properties: { q: "1\ud83d" } }, "properties.q"],
    ];
    for (const [e, field] of cases) {
      expect(reason(() => encodeEvent(e as never, now, undefined))).toEqual({
        field,
        reason: "invalid_unicode",
      });
    }
    expect(reason(() => encodeEvent({ type: "t", customer: "c" }, now, lone))).toEqual({
      field: "source",
      reason: "invalid_unicode",
    });
    const ok = decodeOne({ type: "t", customer: "\u{1f600}", properties: { "k\u{10ffff}": "\ud83d\ude00" } });
    expect(ok.customer).toBe("\u{1f600}");
    expect(ok.properties).toEqual({ "k\u{10ffff}": "\u{1f600}" });
  });

  it("refuses a __proto__ key instead of losing it, keeps constructor and prototype", () => {
    const props = JSON.parse('{"__proto__":"1"}') as Record<string, string>;
    expect(
      reason(() => encodeEvent({ type: "t", customer: "c", properties: props }, now, undefined)),
    ).toEqual({
      field: "properties.__proto__",
      reason: "reserved_key",
    });
    expect(
      decodeOne({ type: "t", customer: "c", properties: { constructor: "1", prototype: 2 } }).properties,
    ).toEqual({ constructor: "1", prototype: "2" });
  });

  it("uses the default source unless the event has one", () => {
    expect(decodeOne({ type: "t", customer: "c" }, "api").source).toBe("api");
    expect(decodeOne({ type: "t", customer: "c", source: "worker" }, "api").source).toBe("worker");
  });
});

describe("encodeBatch", () => {
  it("concatenates encoded events into a valid EventBatch, also with multi-byte lengths", () => {
    const events = [
      encodeEvent({ id: "a", type: "t", customer: "c" }, now, undefined),
      encodeEvent(
        { id: "b", type: "t", customer: "c", properties: { big: "x".repeat(4000) } },
        now,
        undefined,
      ),
      encodeEvent({ id: "c", type: "t", customer: "ü", time: "2026-11-25T10:00:00Z" }, now, undefined),
    ];
    const batch = tally.v1.EventBatch.decode(encodeBatch(events));
    expect(batch.events.map((e) => e.id)).toEqual(["a", "b", "c"]);
    expect(batch.events[1]!.properties!.big).toHaveLength(4000);
    expect(decodeEvents(events)).toEqual([
      { id: "a", type: "t", customer: "c", time: now },
      { id: "b", type: "t", customer: "c", time: now, properties: { big: "x".repeat(4000) } },
      { id: "c", type: "t", customer: "ü", time: "2026-11-25T10:00:00Z" },
    ]);
  });
});
