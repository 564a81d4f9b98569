import { describe, it, expect } from "vitest";
import fc from "fast-check";
import { dec, divRound, fmt, isCanonical, isZero, roundHalfUp } from "./decimal.js";
import {
  addFixed,
  cmpFixed,
  divRoundFixed,
  fmtFixed,
  mulFixed,
  parseCanonical,
  parseFixed,
  roundHalfUpFixed,
  subFixed,
} from "./fixed.js";
import type { Fixed } from "./fixed.js";

/** A non-negative decimal string of 1–`maxDigits` digits with 0–`maxScale` of them after the point. */
function decimalText(maxDigits: number, maxScale: number): fc.Arbitrary<string> {
  return fc
    .tuple(fc.stringMatching(new RegExp(`^[0-9]{1,${maxDigits}}$`)), fc.integer({ min: 0, max: maxScale }))
    .map(([digits, scale]) => {
      if (scale === 0) return digits;
      const padded = digits.padStart(scale + 1, "0");
      return `${padded.slice(0, -scale)}.${padded.slice(-scale)}`;
    });
}

/** Mostly small values, some close to 2^53 so that the overflow checks are exercised. */
const text = fc.oneof(decimalText(6, 4), decimalText(15, 12), decimalText(17, 3));

function fixed(s: string): Fixed | undefined {
  return parseFixed(s);
}

describe("parseFixed", () => {
  it("reads plain decimals and says whether the text is canonical", () => {
    expect(parseFixed("0")).toEqual({ c: 0, s: 0, canonical: true });
    expect(parseFixed("1234.567")).toEqual({ c: 1234567, s: 3, canonical: true });
    expect(parseFixed("0.05")).toEqual({ c: 5, s: 2, canonical: true });
    expect(parseFixed("007")).toEqual({ c: 7, s: 0, canonical: false });
    expect(parseFixed("1.50")).toEqual({ c: 150, s: 2, canonical: false });
    expect(parseFixed("999999999999999")).toEqual({ c: 999_999_999_999_999, s: 0, canonical: true });
  });

  it("refuses signs, exponents, stray characters and more than 15 significant digits", () => {
    for (const s of ["", "-1", "+1", "1e3", ".5", "5.", "1.2.3", " 1", "1_000", "0x10", "١"]) {
      expect(parseFixed(s), s).toBeUndefined();
    }
    expect(parseFixed("1234567890123456")).toBeUndefined();
    // Trailing zeros count once a digit is significant: the property tests rely on this to send the
    // same value down the big.js path.
    expect(parseFixed(`1.5${"0".repeat(16)}`)).toBeUndefined();
    // Leading zeros do not count.
    expect(parseFixed(`${"0".repeat(20)}12.5`)).toEqual({ c: 125, s: 1, canonical: false });
  });

  it("agrees with big.js on value and canonical form", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          text,
          text.map((s) => `0${s}`),
          text.map((s) => `${s}${s.includes(".") ? "0" : ".0"}`),
        ),
        (s) => {
          const f = parseFixed(s);
          if (f === undefined) return;
          expect(fmtFixed(f)).toBe(fmt(dec(s)));
          expect(f.canonical).toBe(isCanonical(s));
          expect(parseCanonical(s) !== undefined).toBe(isCanonical(s));
        },
      ),
    );
  });
});

describe("fixed-point arithmetic", () => {
  it("is exact or refuses: every result equals big.js", () => {
    fc.assert(
      fc.property(text, text, (x, y) => {
        const a = fixed(x);
        const b = fixed(y);
        if (a === undefined || b === undefined) return;
        const [da, db] = [dec(x), dec(y)];
        const sum = addFixed(a, b);
        if (sum !== undefined) expect(fmtFixed(sum)).toBe(fmt(da.plus(db)));
        const diff = subFixed(a, b);
        if (diff !== undefined) expect(fmtFixed(diff)).toBe(fmt(da.minus(db)));
        const product = mulFixed(a, b);
        if (product !== undefined) expect(fmtFixed(product)).toBe(fmt(da.times(db)));
        const c = cmpFixed(a, b);
        if (c !== undefined) expect(c).toBe(da.cmp(db));
        const rounded = roundHalfUpFixed(a);
        if (rounded !== undefined) expect(String(rounded)).toBe(fmt(roundHalfUp(da)));
        if (!isZero(db)) {
          for (const rounding of ["up", "down"] as const) {
            const q = divRoundFixed(a, b, rounding);
            if (q !== undefined) expect(String(q)).toBe(fmt(divRound(da, db, rounding)));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("formats negative values like big.js", () => {
    fc.assert(
      fc.property(text, text, (x, y) => {
        const a = fixed(x);
        const b = fixed(y);
        if (a === undefined || b === undefined) return;
        const diff = subFixed(b, a);
        if (diff !== undefined) expect(fmtFixed(diff)).toBe(fmt(dec(y).minus(dec(x))));
        const rounded = diff === undefined ? undefined : roundHalfUpFixed(diff);
        if (rounded !== undefined) expect(String(rounded)).toBe(fmt(roundHalfUp(dec(y).minus(dec(x)))));
      }),
    );
  });

  it("refuses results beyond 2^53 − 1 instead of rounding them", () => {
    const big: Fixed = { c: Number.MAX_SAFE_INTEGER, s: 0 };
    expect(addFixed(big, { c: 1, s: 0 })).toBeUndefined();
    expect(subFixed({ c: -1, s: 0 }, big)).toBeUndefined();
    expect(mulFixed({ c: 2 ** 27, s: 0 }, { c: 2 ** 26, s: 0 })).toBeUndefined();
    // Aligning scales multiplies by a power of ten, which can overflow too.
    expect(addFixed({ c: 10 ** 15, s: 0 }, { c: 1, s: 2 })).toBeUndefined();
    expect(cmpFixed({ c: 10 ** 15, s: 0 }, { c: 1, s: 2 })).toBeUndefined();
    // A scale beyond 10^15 cannot be divided out exactly here.
    expect(roundHalfUpFixed({ c: 5, s: 16 })).toBeUndefined();
    expect(fmtFixed({ c: 5, s: 16 })).toBe("0.0000000000000005");
    expect(fmtFixed({ c: -1230, s: 18 })).toBe("-0.00000000000000123");
  });
});
