import type { JetStreamClient, KV } from "nats";
import pMap from "p-map";
import { isWrongLastSequence, watchLoaded } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";
import type { JournalEntry, JournalReader } from "./journal.js";

/** KV operations one bulk call keeps in flight (as the invoice store does). */
const concurrency = 64;

/** Fault injection for crash tests (TALLY_FAULT_JOURNAL_CRASH_AFTER_ENTRIES); never set in production. */
export interface JournalStoreFaults {
  /** Called after each entry was stored, with how many this process stored so far. */
  afterEntry?: (storedSoFar: number) => void;
}

/**
 * The journal in one NATS KV bucket (`<prefix>_journal`):
 *
 * - `entry.<id>`: the entry, written with create-only: an entry is immutable, and posting the
 *   same entry twice (ids are deterministic) stores it once;
 * - indexes, written BEFORE the entry (idempotent puts): `date.<YYYY-MM>.<id>` (entries dated in
 *   a month), `service.<YYYY-MM>.<id>` (entries with revenue or deferred lines for that service
 *   month), `doc.<document>.<id>` (a document's entries) and `deferred.<id>` (document entries
 *   with deferred revenue still to recognize: its value lists the days). A crash between an index
 *   and its entry leaves an index key naming no entry, which readers skip and the next posting
 *   round completes (the entry is still missing, so it is posted, writing the same keys again).
 *
 * Listing a month reads only that month's keys and entries, never every entry.
 */
export class JournalStore implements JournalReader {
  private stored = 0;
  private known: Set<string> | null = null;
  private stopWatch: (() => void) | null = null;

  private constructor(
    private readonly kv: KV,
    private readonly log: Logger | undefined,
    private readonly faults: JournalStoreFaults,
  ) {}

  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    log?: Logger,
    faults: JournalStoreFaults = {},
  ): Promise<JournalStore> {
    return new JournalStore(await js.views.kv(bucket, { history: 1, replicas }), log, faults);
  }

  async get(id: string): Promise<JournalEntry | null> {
    const e = await this.kv.get(`entry.${id}`);
    return e === null || e.operation !== "PUT" ? null : e.json<JournalEntry>();
  }

  /**
   * Follows which entries exist (keys only, a KV watch), so {@link has} answers "posted yet?"
   * without a round trip: the poster asks it for every finalized document each round.
   */
  async follow(): Promise<void> {
    if (this.known !== null) return;
    const known = new Set<string>();
    const w = await watchLoaded(
      this.kv,
      { key: "entry.>", headersOnly: true },
      (e) => {
        const id = e.key.slice("entry.".length);
        if (e.operation === "PUT") known.add(id);
        else known.delete(id);
      },
      "journal entries watch",
      { reset: () => known.clear(), ...(this.log ? { log: this.log } : {}) },
    );
    this.stopWatch = w.stop;
    this.known = known;
  }

  /** Whether an entry is posted (after {@link follow}: from memory; before: one read). */
  async has(id: string): Promise<boolean> {
    if (this.known !== null) return this.known.has(id);
    return (await this.kv.get(`entry.${id}`))?.operation === "PUT";
  }

  /** The ids of every posted entry (after {@link follow}; empty before). */
  knownIds(): ReadonlySet<string> {
    return this.known ?? new Set();
  }

  /** How many entries are known to exist (after {@link follow}). */
  get size(): number {
    return this.known?.size ?? 0;
  }

  stop(): void {
    this.stopWatch?.();
    this.stopWatch = null;
    this.known = null;
  }

  /**
   * Posts entries: indexes first, then the entry itself with create-only. Resolves with the ids
   * stored by this call (an entry already there is left as it is and not counted).
   */
  async post(entries: readonly JournalEntry[]): Promise<string[]> {
    const created = await pMap(
      entries,
      async (e) => {
        // The indexes are independent of each other; all of them before the entry.
        await Promise.all(indexKeys(e).map((k) => this.kv.put(k.key, k.value)));
        try {
          await this.kv.create(`entry.${e.id}`, JSON.stringify(e));
        } catch (err: unknown) {
          if (isWrongLastSequence(err)) return null; // posted already: immutable, left as it is
          throw err;
        }
        this.known?.add(e.id);
        this.faults.afterEntry?.(++this.stored);
        return e.id;
      },
      { concurrency },
    );
    return created.filter((id): id is string => id !== null);
  }

  /** Every entry of one document (its entry, recognitions, payments), in date then id order. */
  async forDocument(document: string): Promise<JournalEntry[]> {
    return this.readIndexed(`doc.${document}.*`);
  }

  /** Entries dated in `[from, to]` (inclusive `YYYY-MM-DD`), in date then id order. */
  async list(range: { from: string; to: string }): Promise<JournalEntry[]> {
    const out: JournalEntry[] = [];
    for (const month of monthsBetween(range.from.slice(0, 7), range.to.slice(0, 7))) {
      for (const e of await this.readIndexed(`date.${month}.*`))
        if (e.date >= range.from && e.date <= range.to) out.push(e);
    }
    return sortEntries(out);
  }

  /** Entries with revenue or deferred lines whose service period is in `month` (`YYYY-MM`). */
  async forServiceMonth(month: string): Promise<JournalEntry[]> {
    return this.readIndexed(`service.${month}.*`);
  }

  /**
   * Entries dated in `month` and entries with service in it, each read once (most are both):
   * what a month's revenue report reads.
   */
  async forMonth(month: string): Promise<{ dated: JournalEntry[]; service: JournalEntry[] }> {
    const [dated, service] = await Promise.all([
      this.idsOf(`date.${month}.*`),
      this.idsOf(`service.${month}.*`),
    ]);
    const ids = [...new Set([...dated, ...service])];
    const read = await pMap(ids, (id) => this.get(id), { concurrency });
    const byId = new Map(read.flatMap((e) => (e === null ? [] : [[e.id, e] as const])));
    const pick = (xs: Set<string>) => sortEntries([...xs].flatMap((id) => byId.get(id) ?? []));
    return { dated: pick(dated), service: pick(service) };
  }

  private async idsOf(pattern: string): Promise<Set<string>> {
    const ids = new Set<string>();
    for await (const k of await this.kv.keys(pattern)) ids.add(k.slice(k.lastIndexOf(".") + 1));
    return ids;
  }

  /** Document entries that deferred revenue, with the days their recognitions are due. */
  async deferrals(): Promise<{ entry: string; days: string[] }[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys("deferred.*")) keys.push(k);
    const read = await pMap(keys, (k) => this.kv.get(k), { concurrency });
    return read.flatMap((e, i) =>
      e === null || e.operation !== "PUT"
        ? []
        : [{ entry: keys[i]!.slice("deferred.".length), days: e.json<string[]>() }],
    );
  }

  private async readIndexed(pattern: string): Promise<JournalEntry[]> {
    const ids = await this.idsOf(pattern);
    const read = await pMap([...ids], (id) => this.get(id), { concurrency });
    return sortEntries(read.filter((e): e is JournalEntry => e !== null));
  }
}

/** The index keys of an entry (see {@link JournalStore}). */
function indexKeys(e: JournalEntry): { key: string; value: string }[] {
  const keys = [
    { key: `date.${e.date.slice(0, 7)}.${e.id}`, value: e.date },
    { key: `doc.${e.document}.${e.id}`, value: e.kind },
  ];
  const months = new Set<string>();
  const days = new Set<string>();
  for (const l of e.lines) {
    if (l.service_period !== null) {
      // A revenue line's period lies in one month of the accounting zone; its start's UTC month
      // may be the previous one (zones east of UTC), so both are indexed: a reader filters.
      months.add(l.service_period.start.slice(0, 7));
      months.add(new Date(Date.parse(l.service_period.end) - 1).toISOString().slice(0, 7));
    }
    if (l.recognize_on !== undefined) days.add(l.recognize_on);
  }
  for (const m of months) keys.push({ key: `service.${m}.${e.id}`, value: "" });
  if (days.size > 0 && e.kind !== "recognition")
    keys.push({ key: `deferred.${e.id}`, value: JSON.stringify([...days].sort()) });
  return keys;
}

function sortEntries(entries: JournalEntry[]): JournalEntry[] {
  return entries.sort((a, b) => (a.date === b.date ? (a.id < b.id ? -1 : 1) : a.date < b.date ? -1 : 1));
}

/** `YYYY-MM` months from `from` to `to` inclusive. */
export function monthsBetween(from: string, to: string): string[] {
  const out: string[] = [];
  let [y, m] = from.split("-").map(Number) as [number, number];
  for (let guard = 0; guard < 1200; guard++) {
    const s = `${String(y).padStart(4, "0")}-${String(m).padStart(2, "0")}`;
    if (s > to) break;
    out.push(s);
    m++;
    if (m > 12) {
      m = 1;
      y++;
    }
  }
  return out;
}
