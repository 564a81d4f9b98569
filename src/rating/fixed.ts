/*
 * Exact fixed-point decimals on safe integers: the fast path of rating.
 *
 * A `Fixed` is `c / 10^s` with `c` a safe integer (|c| ≤ 2^53 − 1) and `s ≥ 0` fraction digits.
 * Every operation is exact or refuses: a product or sum of two safe integers is exact exactly when
 * the result is a safe integer (IEEE rounding is monotonic and 2^53 is representable, so a true
 * result above 2^53 − 1 can never round down into the safe range), and each operation checks that
 * with `Number.isSafeInteger`, returning `undefined` otherwise. Division only happens on exact
 * multiples (`(c − c % p) / p`), whose quotient is a representable integer. So no binary rounding
 * can reach an amount: a caller that gets `undefined` prices the line with big.js instead
 * (`decimal.ts`), which gives the same result at any magnitude.
 */

/** `c / 10^s`, exactly. */
export interface Fixed {
  /** Coefficient: a safe integer. */
  readonly c: number;
  /** Number of fraction digits, ≥ 0. */
  readonly s: number;
}

/** Powers of ten that are safe integers (10^15 < 2^53 < 10^16). */
const POW10: readonly number[] = [
  1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

export const FIXED_ZERO: Fixed = { c: 0, s: 0 };

/** Significant digits a coefficient may have so that it is below 10^15, hence safe. */
const MAX_DIGITS = 15;

const ZERO_CODE = 48;
const NINE_CODE = 57;
const DOT_CODE = 46;

/** A decimal read from text, and whether the text is already its canonical form. */
export interface ParsedFixed extends Fixed {
  /** The text has no leading zeros (but `0.x`) and no trailing fractional zeros. */
  readonly canonical: boolean;
}

/**
 * Parses a non-negative decimal in plain notation (digits with an optional fraction, leading and
 * trailing zeros allowed, as `isDecimalString` in decimal.ts accepts without a sign) whose digits
 * from the first non-zero one on number at most 15. Returns `undefined` for anything else —
 * a sign, an exponent, more digits — which the caller then parses with big.js.
 */
export function parseFixed(text: string): ParsedFixed | undefined {
  const n = text.length;
  if (n === 0) return undefined;
  let c = 0;
  let significant = 0;
  let dot = -1;
  for (let i = 0; i < n; i++) {
    const code = text.charCodeAt(i);
    if (code === DOT_CODE) {
      if (dot !== -1 || i === 0 || i === n - 1) return undefined;
      dot = i;
      continue;
    }
    if (code < ZERO_CODE || code > NINE_CODE) return undefined;
    if (c !== 0 || code !== ZERO_CODE) {
      if (++significant > MAX_DIGITS) return undefined;
      c = c * 10 + (code - ZERO_CODE); // < 10^15: exact
    }
  }
  const canonical =
    !(text.charCodeAt(0) === ZERO_CODE && n > 1 && dot !== 1) &&
    !(dot !== -1 && text.charCodeAt(n - 1) === ZERO_CODE);
  return { c, s: dot === -1 ? 0 : n - dot - 1, canonical };
}

/** Parses a decimal in canonical form (see {@link parseFixed}); `undefined` for anything else. */
export function parseCanonical(text: string): Fixed | undefined {
  const parsed = parseFixed(text);
  return parsed?.canonical === true ? parsed : undefined;
}

/** Canonical plain notation, identical to `fmt` of the same value in `decimal.ts`. */
export function fmtFixed(x: Fixed): string {
  const { c, s } = x;
  if (c === 0) return "0";
  if (s === 0) return String(c);
  const p = POW10[s];
  if (p === undefined) return fmtDigits(c, s);
  // Split into integer and fraction exactly (as in roundHalfUpFixed), then drop trailing zeros.
  const negative = c < 0;
  const abs = negative ? -c : c;
  let fraction = abs % p;
  const integer = (abs - fraction) / p;
  if (fraction === 0) return negative ? `-${integer}` : String(integer);
  let digits = s;
  while (fraction % 10 === 0) {
    fraction /= 10; // a multiple of 10 divided by 10: exact
    digits--;
  }
  const f = String(fraction);
  const padded = f.length === digits ? f : "0".repeat(digits - f.length) + f;
  return `${negative ? "-" : ""}${integer}.${padded}`;
}

/** {@link fmtFixed} on the digit string, for scales whose power of ten is not a safe integer. */
function fmtDigits(c: number, s: number): string {
  const negative = c < 0;
  // A safe integer prints as plain digits (no exponent below 10^21).
  let digits = String(negative ? -c : c);
  if (digits.length <= s) digits = "0".repeat(s - digits.length + 1) + digits;
  const point = digits.length - s;
  let end = digits.length;
  while (end > point && digits.charCodeAt(end - 1) === ZERO_CODE) end--;
  const body =
    end === point ? digits.slice(0, point) : `${digits.slice(0, point)}.${digits.slice(point, end)}`;
  return negative ? `-${body}` : body;
}

/** `c × 10^k`, or `undefined` if it is not a safe integer. */
function scaleUp(c: number, k: number): number | undefined {
  if (k === 0) return c;
  const p = POW10[k];
  if (p === undefined) return undefined;
  const r = c * p;
  return Number.isSafeInteger(r) ? r : undefined;
}

/** `a + b`, or `undefined` if it does not fit. */
export function addFixed(a: Fixed, b: Fixed): Fixed | undefined {
  if (b.c === 0) return a;
  if (a.c === 0) return b;
  const s = a.s >= b.s ? a.s : b.s;
  const ac = scaleUp(a.c, s - a.s);
  const bc = scaleUp(b.c, s - b.s);
  if (ac === undefined || bc === undefined) return undefined;
  const c = ac + bc;
  return Number.isSafeInteger(c) ? { c, s } : undefined;
}

/** `a − b`, or `undefined` if it does not fit. */
export function subFixed(a: Fixed, b: Fixed): Fixed | undefined {
  if (b.c === 0) return a;
  const s = a.s >= b.s ? a.s : b.s;
  const ac = scaleUp(a.c, s - a.s);
  const bc = scaleUp(b.c, s - b.s);
  if (ac === undefined || bc === undefined) return undefined;
  const c = ac - bc;
  return Number.isSafeInteger(c) ? { c, s } : undefined;
}

/** `a × b`, or `undefined` if it does not fit. */
export function mulFixed(a: Fixed, b: Fixed): Fixed | undefined {
  const c = a.c * b.c;
  if (!Number.isSafeInteger(c)) return undefined;
  return c === 0 ? FIXED_ZERO : { c, s: a.s + b.s };
}

/** Sign of `a − b` (−1, 0, 1), or `undefined` if the operands cannot be aligned exactly. */
export function cmpFixed(a: Fixed, b: Fixed): number | undefined {
  const s = a.s >= b.s ? a.s : b.s;
  const ac = scaleUp(a.c, s - a.s);
  const bc = scaleUp(b.c, s - b.s);
  if (ac === undefined || bc === undefined) return undefined;
  return ac < bc ? -1 : ac > bc ? 1 : 0;
}

/**
 * Rounds to an integer, half away from zero (as `roundHalfUp` in `decimal.ts`), or `undefined`
 * if the scale is too large to divide exactly.
 */
export function roundHalfUpFixed(a: Fixed): number | undefined {
  if (a.s === 0) return a.c;
  const p = POW10[a.s];
  if (p === undefined) return undefined;
  const r = a.c % p; // exact; has the sign of c
  const q = (a.c - r) / p; // an exact multiple of p divided by p: an integer, exactly
  const twice = 2 * (r < 0 ? -r : r); // exact: doubling never rounds
  if (twice < p) return q;
  return a.c < 0 ? q - 1 : q + 1;
}

/**
 * `a / b` rounded to an integer, up (away from zero) or down (toward zero), for `a ≥ 0` and
 * `b > 0` (as `divRound` in `decimal.ts`), or `undefined` if it does not fit.
 */
export function divRoundFixed(a: Fixed, b: Fixed, rounding: "up" | "down"): number | undefined {
  // a / b = (a.c × 10^b.s) / (b.c × 10^a.s)
  const num = scaleUp(a.c, b.s);
  const den = scaleUp(b.c, a.s);
  if (num === undefined || den === undefined || den <= 0 || num < 0) return undefined;
  const r = num % den;
  const q = (num - r) / den;
  return rounding === "up" && r !== 0 ? q + 1 : q;
}
