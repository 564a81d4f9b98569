import { randomUUID } from "node:crypto";
import Big from "big.js";
import type { Clock } from "../stripe-server/ids.js";

/**
 * In-memory Xero organisation: its chart of accounts, its manual journals and the access tokens
 * issued to the custom connection. Tests read it directly (never over HTTP) for assertions.
 */

/** One account of the chart (xero_accounting.yaml `Account`: Code, Name, Type, Status, AccountID). */
export interface AccountRec {
  AccountID: string;
  Code: string;
  Name: string;
  Type: string;
  /** `ACTIVE` | `ARCHIVED` (xero_accounting.yaml `Account.Status`). */
  Status: "ACTIVE" | "ARCHIVED";
}

export interface JournalLineRec {
  /** Exact decimal string (debit +, credit −), as sent. */
  LineAmount: string;
  AccountCode: string;
  AccountID: string;
  Description: string;
}

export interface ManualJournalRec {
  ManualJournalID: string;
  Narration: string;
  /** `YYYY-MM-DD` */
  Date: string;
  Status: "DRAFT" | "POSTED" | "DELETED" | "VOIDED" | "ARCHIVED";
  LineAmountTypes: "NoTax" | "Exclusive" | "Inclusive";
  ShowOnCashBasisReports: boolean;
  Url?: string;
  JournalLines: JournalLineRec[];
  /** ms since the epoch (server clock). */
  UpdatedDateUTC: number;
  /** The Idempotency-Key of the request that created it (for assertions), or null. */
  createdByKey: string | null;
}

export interface OrgOptions {
  /** @default "USD" */
  baseCurrency?: string;
  /** @default "Tally Test Org" */
  name?: string;
  /** The chart; @default a small demo-company-like chart (see {@link defaultChart}). */
  accounts?: { Code: string; Name: string; Type: string; Status?: "ACTIVE" | "ARCHIVED" }[];
}

/** A chart like the demo company's, plus the codes Tally's example catalog maps to. */
export function defaultChart(): { Code: string; Name: string; Type: string }[] {
  return [
    { Code: "090", Name: "Business Bank Account", Type: "BANK" },
    { Code: "120", Name: "Accounts Receivable", Type: "CURRENT" },
    { Code: "200", Name: "Sales", Type: "REVENUE" },
    { Code: "260", Name: "Other Revenue", Type: "REVENUE" },
    { Code: "400", Name: "Advertising", Type: "EXPENSE" },
    { Code: "410", Name: "Discounts Given", Type: "REVENUE" },
    { Code: "835", Name: "Deferred Revenue", Type: "CURRLIAB" },
  ];
}

export class State {
  readonly tenantId = randomUUID();
  readonly organisationId = randomUUID();
  baseCurrency: string;
  orgName: string;
  private readonly accounts = new Map<string, AccountRec>();
  private readonly journals = new Map<string, ManualJournalRec>();

  constructor(
    private readonly clock: Clock,
    opts: OrgOptions = {},
  ) {
    this.baseCurrency = opts.baseCurrency ?? "USD";
    this.orgName = opts.name ?? "Tally Test Org";
    for (const a of opts.accounts ?? defaultChart()) this.addAccount(a);
  }

  addAccount(a: { Code: string; Name: string; Type: string; Status?: "ACTIVE" | "ARCHIVED" }): AccountRec {
    const rec: AccountRec = { AccountID: randomUUID(), Status: "ACTIVE", ...a };
    this.accounts.set(a.Code, rec);
    return rec;
  }

  /** Archives (or removes, with `remove`) an account: journals posting to it are then refused. */
  archiveAccount(code: string, remove = false): void {
    if (remove) this.accounts.delete(code);
    else {
      const a = this.accounts.get(code);
      if (a) a.Status = "ARCHIVED";
    }
  }

  account(code: string): AccountRec | undefined {
    return this.accounts.get(code);
  }

  allAccounts(): AccountRec[] {
    return [...this.accounts.values()];
  }

  /** @internal the route's create, after validation. */
  insertJournal(j: Omit<ManualJournalRec, "ManualJournalID" | "UpdatedDateUTC">): ManualJournalRec {
    const rec: ManualJournalRec = { ...j, ManualJournalID: randomUUID(), UpdatedDateUTC: this.clock.now() };
    this.journals.set(rec.ManualJournalID, rec);
    return rec;
  }

  journal(id: string): ManualJournalRec | undefined {
    return this.journals.get(id);
  }

  /** Every stored manual journal, in creation order. */
  allJournals(): ManualJournalRec[] {
    return [...this.journals.values()];
  }

  /** Journals whose Narration contains `marker` (tests: "exactly once in Xero"). */
  journalsWithNarration(marker: string): ManualJournalRec[] {
    return this.allJournals().filter((j) => j.Narration.includes(marker));
  }

  /** Sum of a journal's lines (must be 0 for anything stored). */
  static total(j: ManualJournalRec): string {
    return j.JournalLines.reduce((s, l) => s.plus(l.LineAmount), new Big(0)).toFixed();
  }
}
