import { randomBytes } from "node:crypto";
import pMap from "p-map";
import type { JournalEntry, JournalReader } from "../../accounting/journal.js";
import type { XeroConfig } from "../../config/index.js";
import type { Logger } from "../../observability/index.js";
import { backoffMs, type RetryPolicy } from "../../sdk/retry.js";
import type { WebhookEmitter } from "../../webhooks/emitter.js";
import type { XeroAnswer, XeroClient } from "./client.js";
import { CallBudgetExhausted } from "./limiter.js";
import { entryIdOf, planBatches, requestBody, toManualJournal, type Mapped } from "./map.js";
import { xeroBatchSize, xeroJournals } from "./metrics.js";
import type { BatchResult, XeroBatchRecord, XeroEntryRecord, XeroStore } from "./store.js";

export interface XeroPushDeps {
  store: XeroStore;
  client: XeroClient;
  config: XeroConfig;
  log: Logger;
  /** Raises `journal.push_failed`; optional (no outbox: failures are only logged and recorded). */
  emitter?: WebhookEmitter;
  /**
   * Reads members of an unfinished batch that the caller did not pass this time (a batch must be
   * resent with exactly its members). Without it such a batch is resolved by lookup instead.
   */
  journal?: JournalReader;
  /** Crash tests: called at named points (`after_record`, `after_response`). */
  crashPoint?: (point: "after_record" | "after_response") => void;
  now?: () => number;
}

/** What one `pushJournals` call did. */
export interface XeroPushReport {
  /** Entries that Xero holds now and did not before this call (by this call or a resumed batch). */
  pushed: number;
  /** Entries already pushed before this call. */
  alreadyPushed: number;
  /** Entries refused for good (Xero's validation, or not sendable), with the reason. */
  failed: { entry: string; code: string; message: string }[];
  /** Entries left for a later call (a retriable failure backing off, the daily budget spent). */
  deferred: number;
  /** ManualJournals requests sent (resends included) and lookup calls made. */
  requests: number;
  lookups: number;
  elapsedMs: number;
}

/** A report of nothing done yet (each call, and the sum of several, start from it). */
export function emptyPushReport(): XeroPushReport {
  return { pushed: 0, alreadyPushed: 0, failed: [], deferred: 0, requests: 0, lookups: 0, elapsedMs: 0 };
}

/** Backoff of a batch after a retriable failure, across calls (doubles up to TALLY_XERO_RETRY_MAX_MS). */
const sendRetry = (maxMs: number): RetryPolicy => ({
  maxAttempts: 8,
  initialDelayMs: 500,
  maxDelayMs: maxMs,
  maxRetryAfterMs: maxMs,
});
/** Attempts of one batch within one call before it is left for a later call. */
const SENDS_PER_CALL = 4;
/** Xero pages manual journals 100 at a time (xero_accounting.yaml `getManualJournals.page`). */
const PAGE_SIZE = 100;
/** Lookups list journals modified since the batch's first send minus this (clock skew with Xero). */
const LOOKUP_SKEW_MS = 5 * 60_000;

/**
 * Pushes posted journal entries to Xero as ManualJournals, several per request, exactly once
 * across crashes.
 *
 * Per entry, a record in `<prefix>_xero` (`pending → batched → pushed | failed`); per request, a
 * batch record whose membership and Idempotency-Key are written before the first send. Every
 * send is recorded (count, first send time) before it goes out, and every answer is recorded
 * (as the batch's `results`) before it is applied to the entries. So a SIGKILL anywhere leaves
 * an open batch that the next call finishes first:
 * - within TALLY_XERO_IDEMPOTENCY_TRUST_MS of its first send it is resent with the same body and
 *   key, and Xero answers with what it did the first time;
 * - after that the key may have expired at Xero (a resend could create the journals again), so
 *   the journals are looked up by their narration marker (`[tally:<entry id>]`) among the
 *   journals modified since the first send; found ones are recorded as pushed, the rest go back
 *   to `pending` and are sent in a new batch with a new key.
 * A journal Xero refuses (`summarizeErrors=false`: per-journal errors in a 200) is marked failed
 * with Xero's messages and raises `journal.push_failed`; the others in its batch are unaffected.
 */
export class XeroPusher {
  private baseCurrency: string | null;
  private readonly now: () => number;

  constructor(private readonly deps: XeroPushDeps) {
    this.baseCurrency = deps.config.baseCurrency ?? null;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Pushes `entries` (posted journal entries; any order, repeats and already-pushed ones are
   * fine) after finishing any batch a previous run left open.
   */
  async pushJournals(entries: readonly JournalEntry[]): Promise<XeroPushReport> {
    const started = this.now();
    const report = emptyPushReport();
    const given = new Map(entries.map((e) => [e.id, e]));
    try {
      const base = await this.organisationCurrency();
      const resumed = new Set<string>();
      for (const b of await this.deps.store.openBatches()) {
        for (const id of b.entries) resumed.add(id);
        await this.finishBatch(b, given, base, report);
      }

      const candidates: JournalEntry[] = [];
      await pMap(
        [...given.values()],
        async (e) => {
          const rec = await this.deps.store.entry(e.id);
          if (rec?.status === "pushed") {
            if (!resumed.has(e.id)) report.alreadyPushed++;
          } else if (rec?.status === "failed") {
            if (!resumed.has(e.id))
              report.failed.push({
                entry: e.id,
                code: rec.last_error?.code ?? "failed",
                message: rec.last_error?.message ?? "",
              });
            if (!rec.notified) await this.notify(rec);
          } else if (
            rec?.status === "batched" &&
            rec.batch !== null &&
            (await this.deps.store.batch(rec.batch)) !== null
          ) {
            // Still in an open batch (deferred above when it was resumed: counted there).
            if (!resumed.has(e.id)) report.deferred++;
          } else {
            candidates.push(e);
          }
        },
        { concurrency: 16 },
      );
      candidates.sort((a, b) => a.date.localeCompare(b.date) || a.id.localeCompare(b.id));

      const mapped = candidates.map((e) => toManualJournal(e, base));
      for (const m of mapped)
        if (!m.ok) await this.fail(m.entry, given.get(m.entry)!, m.code, m.message, report);
      const ok = mapped.filter((m): m is Extract<Mapped, { ok: true }> => m.ok);
      const { batches, tooLarge } = planBatches(
        ok,
        this.deps.config.journalsPerRequest,
        this.deps.config.maxRequestBytes,
      );
      for (const t of tooLarge) {
        await this.fail(
          t.entry,
          given.get(t.entry)!,
          "too_large",
          `the journal alone exceeds ${this.deps.config.maxRequestBytes} bytes`,
          report,
        );
      }
      let exhausted = false;
      await pMap(
        batches,
        async (members) => {
          if (exhausted) {
            report.deferred += members.length;
            return;
          }
          const b = await this.openBatch(members.map((m) => given.get(m.entry)!));
          try {
            await this.finishBatch(b, given, base, report);
          } catch (err: unknown) {
            if (!(err instanceof CallBudgetExhausted)) throw err;
            exhausted = true;
            report.deferred += b.entries.length;
          }
        },
        { concurrency: this.deps.config.concurrency },
      );
    } catch (err: unknown) {
      if (!(err instanceof CallBudgetExhausted)) throw err;
      this.deps.log.warn(
        { waitMs: err.waitMs },
        "xero: call budget exhausted; the rest waits for the next run",
      );
    }
    report.elapsedMs = this.now() - started;
    return report;
  }

  /** Account codes of `codes` that the organisation's chart lacks or has archived (one call). */
  async missingAccounts(codes: readonly string[]): Promise<string[]> {
    const a = await this.deps.client.get("Accounts");
    if (a.kind !== "ok") throw new Error(`xero: reading the chart of accounts failed: ${a.message}`);
    const active = new Set(
      ((a.body as { Accounts?: { Code?: string; Status?: string }[] }).Accounts ?? [])
        .filter((x) => x.Status === "ACTIVE")
        .map((x) => x.Code),
    );
    return [...new Set(codes)].filter((c) => !active.has(c));
  }

  /**
   * The organisation's base currency: TALLY_XERO_BASE_CURRENCY when set, else `GET
   * /Organisation` once per pusher (one call; a base currency does not change under a ledger).
   */
  private async organisationCurrency(): Promise<string> {
    if (this.baseCurrency !== null) return this.baseCurrency;
    for (let attempt = 1; ; attempt++) {
      const a = await this.deps.client.get("Organisation");
      if (a.kind === "ok") {
        const cur = (a.body as { Organisations?: { BaseCurrency?: string }[] }).Organisations?.[0]
          ?.BaseCurrency;
        if (typeof cur !== "string") throw new Error("xero: GET /Organisation has no BaseCurrency");
        this.baseCurrency = cur.toUpperCase();
        return this.baseCurrency;
      }
      if (a.kind === "refused" || attempt >= SENDS_PER_CALL)
        throw new Error(`xero: GET /Organisation failed: ${a.message}`);
      await this.pause(a, attempt);
    }
  }

  /** Writes a new batch: its membership and Idempotency-Key, before anything is claimed or sent. */
  private async openBatch(members: JournalEntry[]): Promise<XeroBatchRecord> {
    const id = `b_${randomBytes(12).toString("hex")}`;
    const rec: XeroBatchRecord = {
      id,
      // ≤ 128 characters (xero_accounting.yaml `Idempotency-Key`).
      key: `tally-xero-${id}`,
      entries: members.map((m) => m.id),
      state: "open",
      created_at: new Date(this.now()).toISOString(),
      first_sent_at: null,
      sends: 0,
      last_error: null,
      next_attempt_at: null,
      results: null,
      resolution: null,
    };
    await this.deps.store.updateBatch(id, () => rec);
    return rec;
  }

  /**
   * Claims a never-sent batch's members (`batched` to it). A member in another batch that still
   * exists, or already pushed or failed, is dropped from this batch; membership is then written
   * once more and frozen by the first send. Null when no member is left (the batch is deleted).
   */
  private async claim(b: XeroBatchRecord, members: JournalEntry[]): Promise<XeroBatchRecord | null> {
    const at = new Date(this.now()).toISOString();
    const claimed: string[] = [];
    for (const m of members) {
      const cur = await this.deps.store.entry(m.id);
      // A `batched` record whose batch is gone was claimed by a run that died before its send.
      const otherAlive =
        cur?.status === "batched" &&
        cur.batch !== null &&
        cur.batch !== b.id &&
        (await this.deps.store.batch(cur.batch)) !== null;
      if (otherAlive) continue;
      let won = false;
      await this.deps.store.updateEntry(m.id, (c) => {
        won = false;
        if (c !== null && c.status !== "pending" && c.status !== "batched") return null;
        if (c?.status === "batched" && c.batch !== cur?.batch && c.batch !== b.id) return null;
        won = true;
        return { ...(c ?? newEntryRecord(m, at)), status: "batched", batch: b.id, updated_at: at };
      });
      if (won) claimed.push(m.id);
    }
    if (claimed.length === 0) {
      await this.deps.store.deleteBatch(b.id);
      return null;
    }
    if (claimed.length === b.entries.length) return b;
    return this.deps.store.updateBatch(b.id, (cur) =>
      cur === null || cur.sends > 0 ? null : { ...cur, entries: claimed },
    );
  }

  /** Drives one batch to applied results (or leaves it open with a retry time). */
  private async finishBatch(
    batch: XeroBatchRecord,
    given: Map<string, JournalEntry>,
    base: string,
    report: XeroPushReport,
  ): Promise<void> {
    let b = batch;
    if (b.state === "answered") return this.apply(b, report);
    if (b.next_attempt_at !== null && Date.parse(b.next_attempt_at) > this.now()) {
      report.deferred += b.entries.length;
      return;
    }
    // The batch's body: rebuilt from its members (deterministic, so identical to what was sent).
    const members: JournalEntry[] = [];
    for (const id of b.entries) {
      const e = given.get(id) ?? (await this.deps.journal?.get(id)) ?? null;
      if (e !== null) members.push(e);
    }
    const complete = members.length === b.entries.length && members.every((e) => toManualJournal(e, base).ok);
    if (!complete) {
      if (b.sends === 0) {
        // Never sent: nothing to find in Xero; the members go back to pending and are re-planned.
        return this.resolveWith(
          b,
          b.entries.map((entry) => ({ entry, manual_journal_id: null, errors: null, requeue: true })),
          report,
        );
      }
      // Sent, but it cannot be resent as it was (members not passed and no reader).
      return this.lookup(b, report);
    }
    if (b.sends === 0) {
      const claimed = await this.claim(b, members);
      if (claimed === null) return;
      b = claimed;
    }
    const byId = new Map(members.map((e) => [e.id, e]));
    const rendered = b.entries.map((id) => toManualJournal(byId.get(id)!, base));
    const body = requestBody(rendered.map((r) => (r as Extract<Mapped, { ok: true }>).json));

    for (let attempt = 1; ; attempt++) {
      const firstSent = b.first_sent_at === null ? null : Date.parse(b.first_sent_at);
      if (firstSent !== null && this.now() - firstSent >= this.deps.config.idempotencyTrustMs) {
        return this.lookup(b, report);
      }
      const at = new Date(this.now()).toISOString();
      b = (await this.deps.store.updateBatch(b.id, (cur) =>
        cur === null || cur.state !== "open"
          ? null
          : { ...cur, sends: cur.sends + 1, first_sent_at: cur.first_sent_at ?? at, last_sent_at: at },
      ))!;
      if (b.state !== "open") return this.apply(b, report);
      this.deps.crashPoint?.("after_record");
      xeroBatchSize.observe(b.entries.length);
      const answer = await this.deps.client.createManualJournals(body, b.key);
      report.requests++;
      this.deps.crashPoint?.("after_response");
      switch (answer.kind) {
        case "ok": {
          const results = this.readResults(b, answer);
          if (results === null) return this.lookup(b, report);
          return this.resolveWith(b, results, report, "response");
        }
        case "refused": {
          if (b.sends > 1) {
            // A resend refused as a whole: possibly the key conflicting with a changed body or an
            // expired key's new owner; Xero has no code to tell. Find what exists.
            return this.lookup(b, report);
          }
          // The request itself was refused (nothing was created: Xero validates per journal in a
          // 200 with summarizeErrors=false, so a 4xx means the whole request): every member fails.
          const message = `Xero refused the request (${answer.status}): ${answer.message}`;
          return this.resolveWith(
            b,
            b.entries.map((entry) => ({ entry, manual_journal_id: null, errors: [message] })),
            report,
            "response",
          );
        }
        case "unknown": {
          this.deps.log.warn(
            { batch: b.id, status: answer.status, attempt, reason: answer.message },
            "xero: batch outcome unknown; resending under its key",
          );
          const inline = answer.retryAfterMs ?? backoffMs(sendRetry(this.deps.config.retryMaxMs), attempt);
          if (attempt < SENDS_PER_CALL && inline <= this.maxInlineWaitMs()) {
            await sleep(inline);
            continue;
          }
          const wait = answer.retryAfterMs ?? backoffMs(sendRetry(this.deps.config.retryMaxMs), b.sends);
          await this.deps.store.updateBatch(b.id, (cur) =>
            cur === null
              ? null
              : {
                  ...cur,
                  last_error: {
                    code: answer.status === null ? "network" : String(answer.status),
                    message: answer.message,
                    at,
                  },
                  next_attempt_at: new Date(this.now() + wait).toISOString(),
                },
          );
          // Xero's own 429 with a wait past the minute (its day limit): the whole run stops.
          if (answer.status === 429 && wait > this.maxInlineWaitMs()) throw new CallBudgetExhausted(wait);
          report.deferred += b.entries.length;
          return;
        }
      }
    }
  }

  /** Sleeps before retrying a read; a wait past the minute budget ends the run instead. */
  private async pause(a: Extract<XeroAnswer, { kind: "unknown" }>, attempt: number): Promise<void> {
    const wait = a.retryAfterMs ?? backoffMs(sendRetry(this.deps.config.retryMaxMs), attempt);
    if (wait > this.maxInlineWaitMs()) throw new CallBudgetExhausted(wait);
    await sleep(wait);
  }

  /** Longest wait slept within a run (the minute budget's); anything longer ends the run. */
  private maxInlineWaitMs(): number {
    return 2 * this.deps.config.minuteWindowMs + 5_000;
  }

  /**
   * Xero's per-journal answers, matched to members by position (Xero answers in request order)
   * and checked by narration marker; null when the answer does not line up (then look up).
   */
  private readResults(b: XeroBatchRecord, answer: Extract<XeroAnswer, { kind: "ok" }>): BatchResult[] | null {
    const list = (answer.body as { ManualJournals?: unknown[] } | null)?.ManualJournals;
    if (!Array.isArray(list) || list.length !== b.entries.length) return null;
    const out: BatchResult[] = [];
    for (const [i, raw] of list.entries()) {
      const j = raw as {
        Narration?: unknown;
        ManualJournalID?: unknown;
        StatusAttributeString?: unknown;
        ValidationErrors?: { Message?: unknown }[];
      };
      const entry = b.entries[i]!;
      const errors = (j.ValidationErrors ?? []).map((v) =>
        typeof v.Message === "string" ? v.Message : JSON.stringify(v),
      );
      if (j.StatusAttributeString === "ERROR" || errors.length > 0) {
        out.push({
          entry,
          manual_journal_id: null,
          errors: errors.length > 0 ? errors : ["Xero refused the journal"],
        });
        continue;
      }
      if (
        typeof j.Narration !== "string" ||
        entryIdOf(j.Narration) !== entry ||
        typeof j.ManualJournalID !== "string"
      )
        return null;
      out.push({ entry, manual_journal_id: j.ManualJournalID, errors: null });
    }
    return out;
  }

  /**
   * Finds the batch's journals in Xero by narration marker among those modified since its first
   * send (one call per 100 journals): the way to learn what a batch did when its key can no
   * longer be trusted.
   */
  private async lookup(b: XeroBatchRecord, report: XeroPushReport): Promise<void> {
    // Only once no request of this batch can still be executing at Xero (twice the request
    // timeout after the last send started): a journal committed after the listing would be
    // missed and created again. Until then the batch waits.
    const settled =
      Date.parse(b.last_sent_at ?? b.first_sent_at ?? b.created_at) + 2 * this.deps.config.timeoutMs;
    if (b.sends > 0 && this.now() < settled) {
      await this.deps.store.updateBatch(b.id, (cur) =>
        cur === null ? null : { ...cur, next_attempt_at: new Date(settled).toISOString() },
      );
      report.deferred += b.entries.length;
      return;
    }
    const want = new Set(b.entries);
    const found = new Map<string, string>();
    const since = new Date(Date.parse(b.first_sent_at ?? b.created_at) - LOOKUP_SKEW_MS)
      .toISOString()
      .slice(0, 19);
    for (let page = 1; ; page++) {
      let a: XeroAnswer;
      for (let attempt = 1; ; attempt++) {
        report.lookups++;
        a = await this.deps.client.get(
          "ManualJournals",
          { page: String(page) },
          { "if-modified-since": since },
        );
        if (a.kind === "ok") break;
        if (a.kind === "refused" || attempt >= SENDS_PER_CALL) {
          throw new Error(`xero: listing manual journals failed (${a.status}): ${a.message}`);
        }
        await this.pause(a, attempt);
      }
      const list =
        (a.body as { ManualJournals?: { Narration?: string; ManualJournalID?: string }[] }).ManualJournals ??
        [];
      for (const j of list) {
        const id = typeof j.Narration === "string" ? entryIdOf(j.Narration) : null;
        if (id !== null && want.has(id) && typeof j.ManualJournalID === "string" && !found.has(id))
          found.set(id, j.ManualJournalID);
      }
      if (list.length < PAGE_SIZE) break;
    }
    this.deps.log.info(
      { batch: b.id, found: found.size, of: b.entries.length },
      "xero: batch resolved by lookup",
    );
    return this.resolveWith(
      b,
      b.entries.map((entry) => {
        const id = found.get(entry);
        return id !== undefined
          ? { entry, manual_journal_id: id, errors: null }
          : { entry, manual_journal_id: null, errors: null, requeue: true };
      }),
      report,
      "lookup",
    );
  }

  /** Records the batch's results, then applies them. */
  private async resolveWith(
    b: XeroBatchRecord,
    results: BatchResult[],
    report: XeroPushReport,
    resolution: "response" | "lookup" = "lookup",
  ): Promise<void> {
    const rec = await this.deps.store.updateBatch(b.id, (cur) =>
      cur === null || cur.state !== "open" ? null : { ...cur, state: "answered", results, resolution },
    );
    if (rec === null) return;
    return this.apply(rec, report);
  }

  /** Applies recorded results to the member entries (idempotent), raises failures, drops the batch. */
  private async apply(b: XeroBatchRecord, report: XeroPushReport): Promise<void> {
    const at = new Date(this.now()).toISOString();
    for (const r of b.results ?? []) {
      let outcome: "pushed" | "failed" | "requeued" | null = null;
      const rec = await this.deps.store.updateEntry(r.entry, (cur) => {
        outcome = null;
        if (cur === null || cur.status === "pushed") return null;
        const base = { ...cur, updated_at: at, batches: cur.batches + 1 };
        // Xero holds it: recorded whatever the record says (defensive: members are claimed before
        // the first send, so it says `batched` to this batch).
        if (r.manual_journal_id !== null) {
          outcome = "pushed";
          return {
            ...base,
            status: "pushed",
            manual_journal_id: r.manual_journal_id,
            pushed_at: at,
            last_error: null,
          };
        }
        if (cur.status !== "batched" || cur.batch !== b.id) return null;
        if (r.errors !== null) {
          outcome = "failed";
          return {
            ...base,
            status: "failed",
            notified: false,
            failures: cur.failures + 1,
            last_error: { code: "xero_validation", message: r.errors.join("; "), at },
          };
        }
        outcome = "requeued";
        return { ...base, status: "pending", batch: null };
      });
      const o = outcome as "pushed" | "failed" | "requeued" | null;
      if (o === null || rec === null) continue;
      xeroJournals.inc({ outcome: o });
      if (o === "pushed") report.pushed++;
      if (o === "failed") {
        report.failed.push({
          entry: r.entry,
          code: "xero_validation",
          message: rec.last_error?.message ?? "",
        });
        await this.notify(rec);
      }
    }
    await this.deps.store.deleteBatch(b.id);
  }

  /** Marks an entry failed without sending it (it cannot be represented in Xero). */
  private async fail(
    id: string,
    e: JournalEntry,
    code: string,
    message: string,
    report: XeroPushReport,
  ): Promise<void> {
    const at = new Date(this.now()).toISOString();
    const rec = await this.deps.store.updateEntry(id, (cur) => {
      if (cur !== null && cur.status !== "pending" && cur.status !== "batched") return null;
      return {
        ...(cur ?? newEntryRecord(e, at)),
        status: "failed",
        batch: null,
        notified: false,
        failures: (cur?.failures ?? 0) + 1,
        last_error: { code, message, at },
        updated_at: at,
      };
    });
    xeroJournals.inc({ outcome: "failed" });
    report.failed.push({ entry: id, code, message });
    this.deps.log.error({ entry: id, code, reason: message }, "xero: journal entry not pushed");
    if (rec !== null && rec.status === "failed") await this.notify(rec);
  }

  /** `journal.push_failed` once per failure (deterministic id), then recorded as notified. */
  private async notify(rec: XeroEntryRecord): Promise<void> {
    if (this.deps.emitter === undefined || rec.notified) return;
    try {
      await this.deps.emitter.emit({
        id: `evt_journal_push_failed_${rec.entry}_${rec.failures}`,
        type: "journal.push_failed",
        data: {
          entry: rec.entry,
          document: rec.document,
          target: "xero",
          code: rec.last_error?.code ?? "failed",
          message: rec.last_error?.message ?? "",
          failed_at: rec.last_error?.at ?? rec.updated_at,
        },
      });
    } catch (err: unknown) {
      // Left un-notified: the next run emits it again (the id makes it one event).
      this.deps.log.warn({ entry: rec.entry, err }, "xero: journal.push_failed not raised; retried next run");
      return;
    }
    await this.deps.store.updateEntry(rec.entry, (cur) =>
      cur === null || cur.status !== "failed" || cur.failures !== rec.failures
        ? null
        : { ...cur, notified: true },
    );
  }

  /** An operator fixed the cause of a failure: the entry is sent again by the next push. */
  async retryFailed(entryId: string): Promise<boolean> {
    const rec = await this.deps.store.updateEntry(entryId, (cur) =>
      cur === null || cur.status !== "failed"
        ? null
        : { ...cur, status: "pending", batch: null, updated_at: new Date(this.now()).toISOString() },
    );
    return rec?.status === "pending";
  }
}

function newEntryRecord(e: JournalEntry, at: string): XeroEntryRecord {
  return {
    entry: e.id,
    document: e.document,
    status: "pending",
    batch: null,
    manual_journal_id: null,
    batches: 0,
    last_error: null,
    notified: false,
    failures: 0,
    created_at: at,
    updated_at: at,
    pushed_at: null,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
