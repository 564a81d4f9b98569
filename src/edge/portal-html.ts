import { DateTime } from "luxon";
import { minorToDecimal } from "../rating/index.js";

/*
 * Text helpers shared by the customer page's renderers (portal.ts, portal-billing.ts): one
 * escaping function for everything that reaches the HTML, and number, money and date formats
 * that never go through a binary float.
 */

/** Escapes text for HTML element content and double- or single-quoted attribute values. */
export const esc = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!,
  );

/** `1234567.5` → `1,234,567.5` without going through a float. */
export function groupDigits(v: string): string {
  const [int = "0", frac] = v.split(".");
  const neg = int.startsWith("-");
  const digits = neg ? int.slice(1) : int;
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${neg ? "-" : ""}${grouped}${frac === undefined ? "" : `.${frac}`}`;
}

const moneyFormats = new Map<string, Intl.NumberFormat>();

/**
 * An amount in integer minor units as money: `(123456, "USD", 2)` → `$1,234.56`,
 * `(1234, "JPY", 0)` → `¥1,234`. Intl formats the exact decimal string (ECMA-402 reads a string
 * argument as an exact decimal), with exactly `exponent` fraction digits: the invoice's own
 * exponent, not the locale's idea of the currency.
 */
export function formatMoney(amount: number, currency: string, exponent: number): string {
  const key = `${currency}\u0000${exponent}`;
  let f = moneyFormats.get(key);
  if (f === undefined) {
    f = new Intl.NumberFormat("en", {
      style: "currency",
      currency,
      minimumFractionDigits: exponent,
      maximumFractionDigits: exponent,
    });
    moneyFormats.set(key, f);
  }
  // The string overload is exact; TypeScript's lib types only declare number and bigint.
  return f.format(minorToDecimal(amount, exponent) as unknown as number);
}

const startOfDay = (t: DateTime) => t.equals(t.startOf("day"));

/**
 * A half-open period `[start, end)` for people, in `tz`: whole local days as inclusive dates
 * (`1 Nov 2026 – 30 Nov 2026`, or one date for a one-day period); otherwise with times, the end
 * shown as it is (exclusive).
 */
export function formatPeriod(startIso: string, endIso: string, tz: string): string {
  const s = DateTime.fromISO(startIso, { zone: tz });
  const e = DateTime.fromISO(endIso, { zone: tz });
  if (startOfDay(s) && startOfDay(e)) {
    const last = e.minus({ days: 1 });
    const a = s.toFormat("d LLL yyyy");
    const b = last.toFormat("d LLL yyyy");
    return a === b ? a : `${a} – ${b}`;
  }
  return `${s.toFormat("d LLL yyyy, HH:mm")} – ${e.toFormat("d LLL yyyy, HH:mm ZZZZ")}`;
}

/** A date for people, in `tz`: `29 Nov 2026`. */
export function formatDate(iso: string, tz: string): string {
  return DateTime.fromISO(iso, { zone: tz }).toFormat("d LLL yyyy");
}
