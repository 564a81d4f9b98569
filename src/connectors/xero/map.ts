import Big from "big.js";
import type { JournalEntry } from "../../accounting/journal.js";

/**
 * Pure mapping of Tally journal entries to Xero ManualJournals (xero_accounting.yaml
 * `ManualJournal` / `ManualJournalLine`; billing-facts §3.2), and the batching of journals into
 * requests. No I/O: the same entry always gives byte-identical JSON, which is what makes a resend
 * under the same Idempotency-Key the same request.
 */

/** The marker every narration carries: how a journal is found in Xero when no key can be trusted. */
export function narrationMarker(entryId: string): string {
  return `[tally:${entryId}]`;
}

const MARKER = /\[tally:([A-Za-z0-9_:-]+)\]/;

/** The Tally entry id in a Xero narration, or null. */
export function entryIdOf(narration: string): string | null {
  return MARKER.exec(narration)?.[1] ?? null;
}

/** Why an entry cannot be sent to Xero as is (permanent: the same entry fails the same way). */
export type MapErrorCode =
  "not_base_currency" | "amount_precision" | "unbalanced" | "too_few_lines" | "invalid_line" | "too_large";

export type Mapped =
  | { ok: true; entry: string; json: string }
  | { ok: false; entry: string; code: MapErrorCode; message: string };

/** Xero money carries 2 decimal places (`x-is-money`); an amount needing more cannot be sent exactly. */
const XERO_DP = 2;
/** ASSUMED limits (not in the yaml): keep narrations and descriptions well inside any plausible cap. */
const MAX_NARRATION = 500;
const MAX_DESCRIPTION = 4000;

/**
 * One entry → the JSON of one ManualJournal:
 * - `Narration`: the entry's narration, kind and document number, then {@link narrationMarker};
 * - `Date` = `entry.date`; `Status` POSTED; `LineAmountTypes` NoTax (the entry's lines are already
 *   the amounts to book; Xero must not add tax);
 * - one JournalLine per entry line with a non-zero amount: `LineAmount` in major units as an exact
 *   decimal (debit +, credit −; integer minor units ÷ 10^exponent with big.js, never a float),
 *   `AccountCode` = the line's account, `Description` = its description.
 *
 * A manual journal has no currency field: Xero posts it in the organisation's base currency, so
 * an entry in another currency is refused here (`not_base_currency`) and never sent.
 */
export function toManualJournal(entry: JournalEntry, baseCurrency: string): Mapped {
  const fail = (code: MapErrorCode, message: string): Mapped => ({
    ok: false,
    entry: entry.id,
    code,
    message,
  });
  if (entry.currency.toUpperCase() !== baseCurrency.toUpperCase()) {
    return fail(
      "not_base_currency",
      `entry ${entry.id} is in ${entry.currency.toUpperCase()}; Xero manual journals post only in the organisation's base currency ${baseCurrency.toUpperCase()}`,
    );
  }
  const exp = entry.currency_exponent;
  if (!Number.isInteger(exp) || exp < 0 || exp > 6) {
    return fail("amount_precision", `entry ${entry.id} has currency exponent ${exp}`);
  }
  const dp = Math.min(exp, XERO_DP);
  const lines: string[] = [];
  let debits = 0n;
  let credits = 0n;
  for (const [i, l] of entry.lines.entries()) {
    const d = l.debit;
    const c = l.credit;
    if (!Number.isSafeInteger(d) || !Number.isSafeInteger(c) || d < 0 || c < 0 || (d > 0 && c > 0)) {
      return fail(
        "invalid_line",
        `entry ${entry.id} line ${i + 1}: exactly one of debit and credit must be positive`,
      );
    }
    if (l.account.trim() === "")
      return fail("invalid_line", `entry ${entry.id} line ${i + 1} has no account`);
    debits += BigInt(d);
    credits += BigInt(c);
    if (d === 0 && c === 0) continue;
    const major = new Big(d > 0 ? d : -c).div(new Big(10).pow(exp));
    if (!major.round(dp).eq(major)) {
      return fail(
        "amount_precision",
        `entry ${entry.id} line ${i + 1}: ${major.toFixed(exp)} ${entry.currency.toUpperCase()} needs more than ${XERO_DP} decimal places, which Xero amounts cannot carry`,
      );
    }
    lines.push(
      `{"LineAmount":${major.toFixed(dp)},"AccountCode":${JSON.stringify(l.account)},"Description":${JSON.stringify(
        truncate(l.description, MAX_DESCRIPTION),
      )}}`,
    );
  }
  if (debits !== credits) {
    return fail("unbalanced", `entry ${entry.id}: debits ${debits} ≠ credits ${credits} (minor units)`);
  }
  if (lines.length < 2) return fail("too_few_lines", `entry ${entry.id} has fewer than two non-zero lines`);
  const marker = narrationMarker(entry.id);
  const head = truncate(
    `${entry.narration} (${entry.kind} ${entry.document_number})`,
    MAX_NARRATION - marker.length - 1,
  );
  const json =
    `{"Narration":${JSON.stringify(`${head} ${marker}`)},"Date":${JSON.stringify(entry.date)},` +
    `"Status":"POSTED","LineAmountTypes":"NoTax","JournalLines":[${lines.join(",")}]}`;
  return { ok: true, entry: entry.id, json };
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** The request body for journals already rendered by {@link toManualJournal}, in the given order. */
export function requestBody(journals: readonly string[]): string {
  return `{"ManualJournals":[${journals.join(",")}]}`;
}

const ENVELOPE_BYTES = Buffer.byteLength(requestBody([]));

/**
 * Splits rendered journals into requests of at most `maxJournals` and `maxBytes` each, in order.
 * A journal that alone exceeds `maxBytes` is returned in `tooLarge` (it can never be sent).
 */
export function planBatches<T extends { json: string }>(
  journals: readonly T[],
  maxJournals: number,
  maxBytes: number,
): { batches: T[][]; tooLarge: T[] } {
  const batches: T[][] = [];
  const tooLarge: T[] = [];
  let cur: T[] = [];
  let bytes = ENVELOPE_BYTES;
  for (const j of journals) {
    const size = Buffer.byteLength(j.json) + 1;
    if (ENVELOPE_BYTES + size > maxBytes) {
      tooLarge.push(j);
      continue;
    }
    if (cur.length >= maxJournals || bytes + size > maxBytes) {
      batches.push(cur);
      cur = [];
      bytes = ENVELOPE_BYTES;
    }
    cur.push(j);
    bytes += size;
  }
  if (cur.length > 0) batches.push(cur);
  return { batches, tooLarge };
}
