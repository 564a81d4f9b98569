import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RowBinaryWriter, RowEncodingError } from "./row-binary.js";

// The byte layout of ClickHouse's RowBinary, checked value by value; test/sink-insert.test.ts
// sends the same rows to the real 18.16 server and reads every column back.

function bytes(write: (w: RowBinaryWriter) => void): number[] {
  const w = new RowBinaryWriter(4); // tiny, so the tests also cover growing the buffer
  write(w);
  return [...w.bytes()];
}

/** Reads a String back the way the server does: LEB128 length, then that many UTF-8 bytes. */
function readString(buf: Buffer, at: number): { value: string; next: number } {
  let len = 0;
  let shift = 1;
  for (;;) {
    const b = buf[at++]!;
    len += (b & 0x7f) * shift;
    shift *= 0x80;
    if (b < 0x80) break;
  }
  return { value: buf.subarray(at, at + len).toString("utf8"), next: at + len };
}

describe("RowBinaryWriter (happy)", () => {
  it("writes VarUInt lengths in LEB128", () => {
    expect(bytes((w) => w.varUInt(0))).toEqual([0]);
    expect(bytes((w) => w.varUInt(127))).toEqual([0x7f]);
    expect(bytes((w) => w.varUInt(128))).toEqual([0x80, 0x01]);
    expect(bytes((w) => w.varUInt(300))).toEqual([0xac, 0x02]);
    expect(bytes((w) => w.varUInt(2 ** 32))).toEqual([0x80, 0x80, 0x80, 0x80, 0x10]);
  });

  it("writes a String as its UTF-8 byte length and bytes, with nothing escaped", () => {
    expect(bytes((w) => w.string(""))).toEqual([0]);
    expect(bytes((w) => w.string("a\tb"))).toEqual([3, 0x61, 0x09, 0x62]);
    expect(bytes((w) => w.string("é"))).toEqual([2, 0xc3, 0xa9]);
    expect(bytes((w) => w.string("\\'\n\0"))).toEqual([4, 0x5c, 0x27, 0x0a, 0x00]);
    // 43 × "é" = 86 bytes (one length byte); 50 × "é" = 100; 256 ASCII = 2 length bytes.
    expect(bytes((w) => w.string("é".repeat(50)))[0]).toBe(100);
    expect(bytes((w) => w.string("x".repeat(256))).slice(0, 2)).toEqual([0x80, 0x02]);
    expect(bytes((w) => w.string("😀".repeat(30))).slice(0, 1)).toEqual([120]);
    // The short-ASCII fast path and its fallback at the first non-ASCII unit, at the limits.
    expect(bytes((w) => w.string("x".repeat(127)))).toEqual([127, ...Buffer.from("x".repeat(127))]);
    expect(bytes((w) => w.string(`${"x".repeat(126)}é`))).toEqual([
      0x80,
      0x01,
      ...Buffer.from(`${"x".repeat(126)}é`),
    ]);
    expect(bytes((w) => w.string(`ab\u0080`))).toEqual([4, 0x61, 0x62, 0xc2, 0x80]);
    expect(bytes((w) => w.string("x".repeat(128))).slice(0, 3)).toEqual([0x80, 0x01, 0x78]);
  });

  it("writes Array(String), Int64, UInt16, Date and DateTime little-endian", () => {
    expect(bytes((w) => w.strings(["a", ""]))).toEqual([2, 1, 0x61, 0]);
    expect(bytes((w) => w.int64(1))).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
    expect(bytes((w) => w.int64(-1))).toEqual([255, 255, 255, 255, 255, 255, 255, 255]);
    expect(bytes((w) => w.int64(2 ** 32))).toEqual([0, 0, 0, 0, 1, 0, 0, 0]);
    expect(bytes((w) => w.int64(Number.MAX_SAFE_INTEGER))).toEqual([255, 255, 255, 255, 255, 255, 31, 0]);
    expect(bytes((w) => w.int64(-(2 ** 40)))).toEqual([0, 0, 0, 0, 0, 255, 255, 255]);
    expect(bytes((w) => w.int64(1.9))).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
    expect(bytes((w) => w.int64(1_764_460_800_123))).toEqual([...Buffer.from("7b280fd29a010000", "hex")]);
    expect(bytes((w) => w.uint16(513))).toEqual([1, 2]);
    expect(bytes((w) => w.date("1970-01-02"))).toEqual([1, 0]);
    expect(bytes((w) => w.date("2026-11-30"))).toEqual([0x33, 0x51]); // day 20,787
    expect(
      bytes((w) => {
        w.date("2026-11-30");
        w.date("2026-11-30");
        w.date("1970-01-02");
      }),
    ).toEqual([0x33, 0x51, 0x33, 0x51, 1, 0]);
    expect(bytes((w) => w.dateTimeUtc("1970-01-01 00:01:00"))).toEqual([60, 0, 0, 0]);
  });

  it("round-trips any well-formed string byte for byte (property)", () => {
    const wellFormed = fc
      .string({ unit: "binary", maxLength: 300 })
      .filter((s) => Buffer.from(s, "utf8").toString("utf8") === s);
    fc.assert(
      fc.property(fc.array(wellFormed, { maxLength: 20 }), (values) => {
        const w = new RowBinaryWriter(16);
        for (const v of values) w.string(v);
        const buf = w.bytes();
        let at = 0;
        for (const v of values) {
          const r = readString(buf, at);
          expect(r.value).toBe(v);
          at = r.next;
        }
        expect(at).toBe(buf.length);
      }),
      { numRuns: 300 },
    );
  });
});

describe("RowBinaryWriter (error)", () => {
  it("refuses values their column cannot hold, with a RowEncodingError", () => {
    const w = new RowBinaryWriter();
    expect(() => w.int64(Number.NaN)).toThrow(RowEncodingError);
    expect(() => w.uint16(70_000)).toThrow(RowEncodingError);
    expect(() => w.date("2026-13-45")).toThrow(RowEncodingError);
    expect(() => w.date("yesterday")).toThrow(RowEncodingError);
    expect(() => w.dateTimeUtc("2026-11-30T00:00:00Z")).toThrow(RowEncodingError);
    expect(w.length).toBe(0);
  });

  it("rewinds a half-written row", () => {
    const w = new RowBinaryWriter();
    w.string("keep");
    const mark = w.length;
    w.string("drop");
    w.rewind(mark);
    expect([...w.bytes()]).toEqual([4, ...Buffer.from("keep")]);
  });
});
