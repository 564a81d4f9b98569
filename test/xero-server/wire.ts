import type { AccountRec, ManualJournalRec } from "./state.js";

/**
 * JSON renderings. Xero's JSON dates are Microsoft JSON dates: `Date` as `/Date(<ms>+0000)/` at
 * UTC midnight and `UpdatedDateUTC` as `/Date(<ms>+0000)/` (xero_accounting.yaml examples,
 * `x-is-msdate` / `x-is-msdate-time`); `DateTimeUTC` of the envelope as `/Date(<ms>)/`.
 */
export function msDate(ms: number, offset = true): string {
  return offset ? `/Date(${ms}+0000)/` : `/Date(${ms})/`;
}

export function renderJournal(j: ManualJournalRec, withLines = true): Record<string, unknown> {
  return {
    Date: msDate(Date.parse(`${j.Date}T00:00:00Z`)),
    Status: j.Status,
    LineAmountTypes: j.LineAmountTypes,
    UpdatedDateUTC: msDate(j.UpdatedDateUTC),
    ManualJournalID: j.ManualJournalID,
    Narration: j.Narration,
    ...(j.Url !== undefined ? { Url: j.Url } : {}),
    // The list example in xero_accounting.yaml shows `JournalLines: []` for unpaged listings.
    JournalLines: withLines
      ? j.JournalLines.map((l) => ({
          Description: l.Description,
          TaxType: "NONE",
          // A JSON number, as Xero sends (the exact decimal text is kept: raw number literal below).
          LineAmount: new RawNumber(l.LineAmount),
          AccountCode: l.AccountCode,
          Tracking: [],
          AccountID: l.AccountID,
          IsBlank: false,
        }))
      : [],
    ShowOnCashBasisReports: j.ShowOnCashBasisReports,
    HasAttachments: false,
  };
}

export function renderAccount(a: AccountRec): Record<string, unknown> {
  return {
    AccountID: a.AccountID,
    Code: a.Code,
    Name: a.Name,
    Status: a.Status,
    Type: a.Type,
    TaxType: "NONE",
    Class: a.Type === "REVENUE" ? "REVENUE" : a.Type === "EXPENSE" ? "EXPENSE" : "ASSET",
    EnablePaymentsToAccount: false,
    ShowInExpenseClaims: false,
    ReportingCode: "",
    HasAttachments: false,
  };
}

/** A number rendered from its exact decimal text (no float round trip). */
export class RawNumber {
  constructor(readonly text: string) {}
}

/** JSON.stringify that writes {@link RawNumber}s as bare number literals. */
export function stringify(v: unknown): string {
  const raws: string[] = [];
  const s = JSON.stringify(v, (_k, val: unknown) => {
    if (val instanceof RawNumber) {
      raws.push(val.text);
      return `\u0000raw${raws.length - 1}\u0000`;
    }
    return val;
  });
  return s.replace(/"\\u0000raw(\d+)\\u0000"/g, (_m, i: string) => raws[Number(i)]!);
}
