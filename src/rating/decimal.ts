import Big from "big.js";

/*
 * Exact decimal arithmetic for rating, on big.js.
 *
 * Each constructor below is private to this module and configured once at load: `strict` makes
 * big.js throw if a JS number ever reaches it (so no binary float can leak into a quantity or an
 * amount), and division is only done through `divRound`, whose rounding is explicit. Other code in
 * the process that changes the global `Big.DP`/`Big.RM` cannot affect rating.
 */

/** Exact arithmetic: `plus`, `minus`, `times`, `cmp`. Never used to divide. */
const Exact = Big();
Exact.strict = true;
Exact.NE = -1e6;
Exact.PE = 1e6;

/** Division rounded to an integer, half away from zero (ties go up in magnitude). */
const HalfUp = Big();
HalfUp.strict = true;
HalfUp.DP = 0;
HalfUp.RM = Big.roundHalfUp;

/** Division truncated to an integer (floor for non-negative operands). */
const Down = Big();
Down.strict = true;
Down.DP = 0;
Down.RM = Big.roundDown;

/** Division rounded to an integer away from zero (ceiling for non-negative operands). */
const Up = Big();
Up.strict = true;
Up.DP = 0;
Up.RM = Big.roundUp;

/** An exact decimal. */
export type Decimal = Big;

/** How a quotient is rounded to an integer. */
export type IntegerRounding = "half_up" | "down" | "up";

/** Plain decimal notation accepted in plans, usage and inputs: `12`, `-3`, `0.05`, `1e3` is not. */
const DECIMAL_RE = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?$/;
/** Leading zeros are tolerated on input (`007`) because spreadsheets produce them. */
const LOOSE_DECIMAL_RE = /^-?[0-9]+(?:\.[0-9]+)?$/;

/** Shared constants (big.js values are never mutated in place, so sharing is safe). */
export const ZERO: Decimal = new Exact("0");
export const ONE: Decimal = new Exact("1");
export const HUNDRED: Decimal = new Exact("100");
const THOUSAND: Decimal = new Exact("1000");

/** True when `s` is a decimal in plain notation (digits, optional sign and fraction). */
export function isDecimalString(s: string): boolean {
  return LOOSE_DECIMAL_RE.test(s);
}

/**
 * Parses a decimal from a string in plain notation, a safe integer, or a bigint.
 * Returns `undefined` for anything else — notably for non-integer JS numbers, which are binary
 * floats and therefore not exact: callers pass fractional values as strings.
 */
export function toDecimal(value: unknown): Decimal | undefined {
  if (typeof value === "string") {
    return LOOSE_DECIMAL_RE.test(value) ? new Exact(value) : undefined;
  }
  if (typeof value === "number") {
    return Number.isSafeInteger(value) ? new Exact(String(value)) : undefined;
  }
  if (typeof value === "bigint") return new Exact(value.toString());
  return undefined;
}

/** Parses a string already known to be a valid decimal (validated by a schema). */
export function dec(s: string): Decimal {
  return new Exact(s);
}

/** Integer (ms, counts) to decimal. Only safe integers are accepted. */
export function decFromInt(n: number): Decimal {
  if (!Number.isSafeInteger(n)) throw new RangeError(`not a safe integer: ${n}`);
  return new Exact(String(n));
}

/** Milliseconds as an exact decimal string of seconds: 1500 → "1.5". */
export function msToSeconds(ms: number): string {
  return fmt(decFromInt(ms).div(THOUSAND));
}

/** Canonical plain-notation string: no exponent, no trailing fractional zeros, `-0` → `0`. */
export function fmt(d: Decimal): string {
  const s = d.toFixed();
  return s === "-0" ? "0" : s;
}

/** True when the canonical form of `s` is `s` itself (so it can be echoed back unchanged). */
export function isCanonical(s: string): boolean {
  return DECIMAL_RE.test(s) && !(s.includes(".") && s.endsWith("0")) && s !== "-0";
}

/** Number of digits after the decimal point of a plain-notation string. */
export function fractionDigits(s: string): number {
  const dot = s.indexOf(".");
  return dot === -1 ? 0 : s.length - dot - 1;
}

/**
 * `numerator / denominator` rounded to an integer with the given rule, computed exactly:
 * big.js rounds the quotient with full knowledge of the remainder, so there is no double rounding.
 * `denominator` must be non-zero.
 */
export function divRound(numerator: Decimal, denominator: Decimal, rounding: IntegerRounding): Decimal {
  switch (rounding) {
    case "half_up":
      return new HalfUp(numerator).div(denominator);
    case "down":
      return new Down(numerator).div(denominator);
    case "up":
      return new Up(numerator).div(denominator);
  }
}

/*
 * The three predicates below read big.js's normalized representation (coefficient digits `c`,
 * exponent `e`, sign `s`; zero is c = [0]) instead of comparing with a constant, which would
 * allocate a copy of the constant on every call — it matters on the rating hot path.
 */

/** True for an integer value. */
export function isInteger(d: Decimal): boolean {
  return d.c.length <= d.e + 1;
}

/** True for zero (either sign). */
export function isZero(d: Decimal): boolean {
  return d.c[0] === 0;
}

/** True for a value below zero. */
export function isNegative(d: Decimal): boolean {
  return d.s < 0 && d.c[0] !== 0;
}

/** Rounds an exact decimal to an integer, half away from zero (integers are returned as they are). */
export function roundHalfUp(d: Decimal): Decimal {
  return isInteger(d) ? d : d.round(0, Big.roundHalfUp);
}

/** The smaller of two decimals. */
export function min(a: Decimal, b: Decimal): Decimal {
  return a.lte(b) ? a : b;
}

/** The larger of two decimals. */
export function max(a: Decimal, b: Decimal): Decimal {
  return a.gte(b) ? a : b;
}

/**
 * Converts an integer decimal of minor units to a JS number for JSON output.
 * Throws if it is not an integer or not a safe integer (|n| ≤ 2^53 − 1): such an amount cannot be
 * represented exactly as a JSON number, and silently losing a digit of money is not an option.
 */
export function toSafeInteger(d: Decimal, what: string): number {
  // Fast path: an integer of at most 15 digits (< 10^15 < 2^53) is assembled from big.js's decimal
  // digit array; every intermediate value is an integer below 10^15, so this is exact.
  const digits = d.c;
  const exponent = d.e;
  if (exponent < 15 && digits.length <= exponent + 1) {
    let n = 0;
    for (let i = 0; i <= exponent; i++) n = n * 10 + (digits[i] ?? 0);
    return d.s < 0 && n !== 0 ? -n : n;
  }
  const s = fmt(d);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || String(n) !== s) {
    throw new RangeError(`${what} ${s} is not a safe integer number of minor units (|n| ≤ 2^53 − 1)`);
  }
  return n;
}
