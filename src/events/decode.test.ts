import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { tally } from "../gen/proto.js";
import { ApiError } from "../lib/errors.js";
import { decodeEvents, hasLongNumberRun } from "./decode.js";
import { validateEvents } from "./validate.js";

const now = Date.parse("2026-11-25T12:00:00Z");
const ctx = { nowMs: now, backfillDays: 35 };
const utf8 = (s: string) => Buffer.from(s, "utf8");

function thrown(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("did not throw");
}

describe("the edge never publishes what the sink cannot decode", () => {
  // One code point anywhere in 0..10FFFF (fast-check's "binary" unit leaves out lone
  // surrogates), or a lone surrogate half; two halves in a row may form a valid pair.
  const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
  const anyUnit = fc.oneof(
    { weight: 5, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
    { weight: 1, arbitrary: loneSurrogate },
  );
  // Mostly well-formed strings, so that plenty of events are accepted and checked.
  const text = (minLength: number) =>
    fc.oneof(
      { weight: 4, arbitrary: fc.string({ unit: "binary", minLength, maxLength: 10 }) },
      { weight: 1, arbitrary: fc.string({ unit: anyUnit, minLength, maxLength: 10 }) },
    );
  const scalar = fc.oneof(text(0), fc.integer(), fc.boolean());
  const properties = fc.dictionary(
    text(1),
    fc.oneof({ weight: 3, arbitrary: scalar }, { weight: 1, arbitrary: fc.dictionary(text(1), scalar) }),
    { maxKeys: 4 },
  );
  const event = fc.record({
    id: text(1),
    type: fc.constantFrom("api_call", "llm.tokens"),
    customer: text(1),
    source: fc.option(text(0), { nil: undefined }),
    properties: fc.option(properties, { nil: undefined }),
  });

  it("every event validateEvents accepts survives the bus encoding (BusBatch) byte-exact", () => {
    let accepted = 0;
    let astral = 0;
    fc.assert(
      fc.property(fc.array(event, { minLength: 1, maxLength: 4 }), (batch) => {
        // The native route: JSON text (lone surrogates travel as \ud800 escapes), decode, validate.
        const raws = decodeEvents(utf8(JSON.stringify(batch)), "json");
        const { events } = validateEvents(raws, ctx);
        if (events.length === 0) return;
        // What src/bus/publisher.ts publishes, and what the sink's partition worker decodes.
        const bytes = tally.v1.BusBatch.encode({ events }).finish();
        const decoded = tally.v1.BusBatch.decode(bytes).events;
        expect(decoded.length).toBe(events.length);
        events.forEach((e, i) => {
          const d = decoded[i]!;
          expect([d.id, d.type, d.customer, d.source]).toEqual([e.id, e.type, e.customer, e.source]);
          expect(d.propKeys).toEqual(e.propKeys);
          expect(d.propValues).toEqual(e.propValues);
          expect(Number(d.timeMs)).toBe(e.timeMs);
          accepted++;
          if (/[\u{10000}-\u{10ffff}]/u.test(e.id + e.customer + e.propKeys.join(""))) astral++;
        });
      }),
      { numRuns: 500 },
    );
    // The property was exercised, with text beyond the BMP (surrogate pairs) among it.
    expect(accepted).toBeGreaterThan(100);
    expect(astral).toBeGreaterThan(50);
  });
});

describe("decodeEvents protobuf time", () => {
  it("an event without time or time_ms gets the receive time, not epoch 0", () => {
    const body = tally.v1.EventBatch.encode({
      events: [
        { id: "no-time", type: "t", customer: "c" },
        { id: "ms", type: "t", customer: "c", timeMs: now - 5 },
        { id: "text", type: "t", customer: "c", time: "2026-11-25T11:00:00Z" },
      ],
    }).finish();
    const raws = decodeEvents(body, "protobuf");
    expect((raws[0] as { time?: unknown }).time).toBeUndefined();
    const { events, errors } = validateEvents(raws, ctx);
    expect(errors).toEqual([]);
    expect(events.map((e) => [e.id, e.timeMs])).toEqual([
      ["no-time", now],
      ["ms", now - 5],
      ["text", now - 3_600_000],
    ]);
  });
});

describe("decodeEvents counts before materialising", () => {
  const max = 10_000;

  it("refuses 2,000,000 empty protobuf events (4 MB) with 413 after a scan, not 2M objects", () => {
    // An empty Event is the two bytes `0a 00` (field 1, length 0).
    const body = Buffer.alloc(4_000_000);
    for (let i = 0; i < body.length; i += 2) body[i] = 0x0a;
    const heapBefore = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const err = thrown(() => decodeEvents(body, "protobuf", { maxEvents: max }));
    const ms = performance.now() - t0;
    expect(err.code).toBe("payload_too_large");
    expect(err.message).toBe("at most 10000 events per request (got 2000000)");
    // Decoding them all takes 1.3-2.3 s and hundreds of MB; the count ~30 ms (generous bound: CI is shared).
    expect(ms).toBeLessThan(1000);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(50 * 1024 * 1024);
  });

  it("refuses 2,000,000 NDJSON lines the same way, counting only non-blank lines", () => {
    const body = utf8("{}\n".repeat(2_000_000));
    const t0 = performance.now();
    const err = thrown(() => decodeEvents(body, "ndjson", { maxEvents: max }));
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(err.code).toBe("payload_too_large");
    expect(err.message).toBe("at most 10000 events per request (got 2000000)");
    // Blank and whitespace-only lines are not events, as when decoding.
    const lines = `${'{"id":"a"}\n'.repeat(3)}\n  \r\n\u00a0\n{"id":"b"}`;
    expect(thrown(() => decodeEvents(utf8(lines), "ndjson", { maxEvents: 3 })).message).toBe(
      "at most 3 events per request (got 4)",
    );
    expect(decodeEvents(utf8(lines), "ndjson", { maxEvents: 4 })).toHaveLength(4);
  });

  it("counts JSON arrays and protobuf batches at the limit as allowed", () => {
    const arr = JSON.stringify(Array.from({ length: 3 }, (_, i) => ({ id: `${i}` })));
    expect(decodeEvents(utf8(arr), "json", { maxEvents: 3 })).toHaveLength(3);
    expect(thrown(() => decodeEvents(utf8(arr), "json", { maxEvents: 2 })).code).toBe("payload_too_large");
    const pb = tally.v1.EventBatch.encode({
      events: [{ id: "a", properties: { k: "v" } }, { id: "b" }],
    }).finish();
    expect(decodeEvents(pb, "protobuf", { maxEvents: 2 })).toHaveLength(2);
    expect(thrown(() => decodeEvents(pb, "protobuf", { maxEvents: 1 })).message).toBe(
      "at most 1 events per request (got 2)",
    );
    // A truncated body is still a 400, whether or not it is counted first.
    expect(thrown(() => decodeEvents(pb.subarray(0, pb.length - 1), "protobuf", { maxEvents: 5 })).code).toBe(
      "invalid_request",
    );
  });
});

describe("decodeEvents invalid_events has one shape", () => {
  it("locates every imprecise number of a JSON array by event index and field", () => {
    const body = `[
      {"id":"a","type":"t","customer":"c","time":12345678901234567890},
      {"id":"b","type":"t","customer":"c","properties":{"tokens":1}},
      {"id":"c","type":"t","customer":"c","properties":{"usage":{"tokens":1.00000000000000001234},"x":"1.00000000000000001234"}}
    ]`;
    const err = thrown(() => decodeEvents(utf8(body), "json"));
    expect(err.code).toBe("invalid_events");
    expect(err.details).toEqual({
      invalid: 2,
      truncated: false,
      errors: [
        {
          index: 0,
          field: "time",
          code: "imprecise_number",
          message: expect.stringContaining("12345678901234567890"),
        },
        { index: 2, field: "properties.usage.tokens", code: "imprecise_number", message: expect.any(String) },
      ],
    });
  });

  it("names the field of a single JSON event, escaped keys decoded", () => {
    const err = thrown(() =>
      decodeEvents(utf8('{"id":"a","properties":{"to\\"k\\u00e9n":[1, 0.10000000000000000001]}}'), "json"),
    );
    expect((err.details as { errors: unknown[] }).errors).toEqual([
      { index: 0, field: 'properties.to"kén[1]', code: "imprecise_number", message: expect.any(String) },
    ]);
  });

  it("reports every bad NDJSON line at once: syntax errors and imprecise numbers", () => {
    const body = [
      '{"id":"a","properties":{"q":1.00000000000000001}}',
      "",
      "{not json",
      '{"id":"c","properties":{"q":2}}',
      '{"id":"d","properties":{"q":3.00000000000000001,"r":4.00000000000000001}}',
    ].join("\n");
    const err = thrown(() => decodeEvents(utf8(body), "ndjson"));
    expect(err.details).toEqual({
      invalid: 3,
      truncated: false,
      errors: [
        { index: 0, field: "properties.q", code: "imprecise_number", message: expect.any(String) },
        { index: 1, field: "", code: "invalid_json", message: "line 3 is not valid JSON" },
        { index: 3, field: "properties.q", code: "imprecise_number", message: expect.any(String) },
        { index: 3, field: "properties.r", code: "imprecise_number", message: expect.any(String) },
      ],
    });
  });
});

describe("decodeEvents protobuf property keys", () => {
  // Guard: protobufjs 8 decodes map keys as own properties (`__proto__` included), so the key
  // reaches validation and is refused like on every other route rather than silently dropped.
  it("a __proto__ key in a protobuf properties map is refused (reserved_key), not dropped by the decoder", () => {
    const props = JSON.parse('{"__proto__":"5","constructor":"7"}') as Record<string, string>;
    const body = tally.v1.EventBatch.encode({
      events: [
        { id: "ok", type: "t", customer: "c", properties: { a: "1" } },
        { id: "bad", type: "t", customer: "c", properties: props },
      ],
    }).finish();
    const raws = decodeEvents(body, "protobuf");
    const r = validateEvents(raws, { nowMs: Date.now(), backfillDays: 35 });
    expect(r.errors).toEqual([
      expect.objectContaining({ index: 1, field: "properties.__proto__", code: "reserved_key" }),
    ]);
    // A value that merely contains the bytes is not a key.
    const benign = tally.v1.EventBatch.encode({
      events: [{ id: "v", type: "t", customer: "c", properties: { k: "x__proto__y" } }],
    }).finish();
    expect(
      validateEvents(decodeEvents(benign, "protobuf"), { nowMs: Date.now(), backfillDays: 35 }).errors,
    ).toEqual([]);
  });
});

describe("hasLongNumberRun", () => {
  it("answers exactly as /[0-9.]{16,}/ for any text", () => {
    const regex = /[0-9.]{16,}/;
    // Mostly digits and dots, so runs of every length around 16 and at every offset occur.
    const text = fc.oneof(
      fc.string({ unit: fc.constantFrom("1", "9", ".", "0", "a", '"', ",", "-", "e"), maxLength: 120 }),
      fc.string({ unit: fc.constantFrom("5", ".", "x"), maxLength: 80 }),
      fc.string({ maxLength: 60 }),
    );
    fc.assert(
      fc.property(text, (t) => {
        expect(hasLongNumberRun(t)).toBe(regex.test(t));
      }),
      { numRuns: 20_000 },
    );
    for (let len = 0; len < 40; len++) {
      for (let at = 0; at < 40; at++) {
        const t = `${"x".repeat(at)}${"7".repeat(len)}x`;
        expect(hasLongNumberRun(t)).toBe(regex.test(t));
      }
    }
  });
});
