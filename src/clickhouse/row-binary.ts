import { Readable } from "node:stream";
import type { ClickHouseClient } from "@clickhouse/client";

/**
 * Writes rows in ClickHouse's `RowBinary` input format (valid since long before 18.16): each
 * column's value in the table's column order, little-endian, with no separators.
 *
 * Why not JSONEachRow: the sink's inserts were ClickHouse's JSON parsing (per row, per field
 * name) plus the client's `JSON.stringify` of every row object, the sink's largest self time.
 * RowBinary has no escaping at all: a String is its UTF-8 byte length (LEB128) and the bytes, so
 * every value, whatever characters it holds (tabs, newlines, backslashes, quotes, NUL, any
 * Unicode), is written and read back byte for byte. The only way to get it wrong is to write
 * the columns in another order or type than the statement names: {@link insertRowBinary}
 * always names the columns, and the round-trip tests read every column back.
 *
 * Types: String, Array(String), Int64, UInt16, Date (UInt16 days since 1970-01-01), DateTime
 * (UInt32 seconds since the epoch, UTC).
 */
export class RowBinaryWriter {
  private buf: Buffer;
  private at = 0;
  private lastDay = "";
  private lastDayNumber = 0;

  constructor(initialBytes = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** String: LEB128 byte length, then the UTF-8 bytes (lone surrogates become U+FFFD, as in any UTF-8 encoder). */
  string(s: string): void {
    const len = s.length;
    if (len < 128) {
      // Most values (ids, names, property keys) are short ASCII: copy the code units in JS,
      // cheaper than a call into the native UTF-8 encoder per value.
      this.reserve(1 + len);
      const buf = this.buf;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        buf[this.at + 1 + i] = c;
      }
      if (i === len) {
        buf[this.at] = len;
        this.at += 1 + len;
        return;
      }
    }
    // Worst case 3 bytes per UTF-16 unit; exact length only when it matters for the buffer.
    const max = len * 3;
    if (max < 128) {
      this.reserve(1 + max);
      const n = this.buf.write(s, this.at + 1, "utf8");
      this.buf[this.at] = n;
      this.at += 1 + n;
      return;
    }
    const n = Buffer.byteLength(s, "utf8");
    this.varUInt(n);
    this.reserve(n);
    this.at += this.buf.write(s, this.at, "utf8");
  }

  /** Array(String): LEB128 element count, then each element. */
  strings(values: readonly string[]): void {
    this.varUInt(values.length);
    for (const v of values) this.string(v);
  }

  /**
   * Int64 from a JS number (milliseconds are exact up to ±2^53). A fraction is truncated and a
   * value beyond the Int64 range wraps, as the server's own conversions do; NaN/Infinity are not
   * numbers of a row: {@link RowEncodingError}.
   */
  int64(n: number): void {
    if (!Number.isFinite(n)) throw new RowEncodingError(`Int64 value ${n} is not finite`);
    this.reserve(8);
    const v = Math.trunc(n);
    if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      // Two 32-bit halves: no BigInt allocation for the common case (epoch milliseconds).
      this.buf.writeUInt32LE(v % 0x1_0000_0000, this.at);
      this.buf.writeUInt32LE(Math.floor(v / 0x1_0000_0000), this.at + 4);
    } else {
      this.buf.writeBigInt64LE(BigInt.asIntN(64, BigInt(v)), this.at);
    }
    this.at += 8;
  }

  uint16(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > 0xffff)
      throw new RowEncodingError(`UInt16 value ${n} out of range`);
    this.reserve(2);
    this.buf.writeUInt16LE(n, this.at);
    this.at += 2;
  }

  uint32(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
      throw new RowEncodingError(`UInt32 value ${n} out of range`);
    this.reserve(4);
    this.buf.writeUInt32LE(n, this.at);
    this.at += 4;
  }

  /** Date from `YYYY-MM-DD` (a calendar day, no time zone). */
  date(day: string): void {
    // Every row of a batch has the same day: parse it once.
    if (day !== this.lastDay) {
      const ms = Date.parse(`${day}T00:00:00Z`);
      if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(ms))
        throw new RowEncodingError(`not a date: ${day}`);
      this.lastDay = day;
      this.lastDayNumber = ms / 86_400_000;
    }
    this.uint16(this.lastDayNumber);
  }

  /** DateTime from `YYYY-MM-DD hh:mm:ss`, read as UTC. */
  dateTimeUtc(text: string): void {
    const ms = Date.parse(`${text.replace(" ", "T")}Z`);
    if (!/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/.test(text) || Number.isNaN(ms))
      throw new RowEncodingError(`not a date-time: ${text}`);
    this.uint32(Math.floor(ms / 1000));
  }

  /** LEB128 unsigned (ClickHouse's VarUInt). */
  varUInt(n: number): void {
    this.reserve(10);
    while (n >= 0x80) {
      this.buf[this.at++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.at++] = n;
  }

  /** Bytes written so far. */
  get length(): number {
    return this.at;
  }

  /** Drops what was written after `length` was `at` (a row that failed to encode half way). */
  rewind(at: number): void {
    this.at = Math.min(this.at, at);
  }

  /** The bytes written so far (a view, not a copy). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.at);
  }

  private reserve(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }
}

/**
 * A value that the column's type cannot hold: the row is bad, so retrying it cannot succeed
 * (isPermanentInsertError says so, like the server's parse errors of a text format).
 */
export class RowEncodingError extends Error {
  override readonly name = "RowEncodingError";
}

/**
 * `INSERT INTO <table> (<columns>) FORMAT RowBinary` with `body` as the data. `table` and
 * `columns` are Tally's own identifiers (already quoted where needed). Rejects with the
 * client's error (its `Code: N` identifies data errors, see isPermanentInsertError).
 */
export async function insertRowBinary(
  ch: ClickHouseClient,
  table: string,
  columns: readonly string[],
  body: Buffer,
): Promise<void> {
  if (body.length === 0) return;
  const { stream } = await ch.exec({
    query: `INSERT INTO ${table} (${columns.join(", ")}) FORMAT RowBinary`,
    values: Readable.from([body], { objectMode: false }),
  });
  // The response is empty; read it to the end so the keep-alive socket is reused.
  for await (const _ of stream) {
    // nothing to read
  }
}
