import type { KV } from "nats";
import pMap from "p-map";
import { watchLoaded } from "../lib/kv.js";
import type { Logger } from "../observability/index.js";

/** A stored catalog object: its definition plus the version it got and when. */
export type Versioned<D> = D & { version: number; applied_at: string };

/** What applying one definition did. */
export interface ApplyResult {
  key: string;
  outcome: "created" | "updated" | "unchanged";
  version: number;
}

/** How one kind of catalog object (meters, plans, customers, subscriptions) is stored. */
export interface VersionedKind<D extends { key: string }> {
  /** Singular noun for logs and errors (`meter`). */
  noun: string;
  /** KV key prefix of the current records (`meters` → `meters.<key>`). */
  pointer: string;
  /** KV key prefix of the history (`meter_versions` → `meter_versions.<key>.<n>`). */
  history: string;
  /** Validates a stored definition (without `version`/`applied_at`); null when malformed. */
  parse(def: unknown): D | null;
}

/** Thrown when another writer claimed the same version first; apply() retries on it. */
class VersionConflict extends Error {}

/** NATS KV keys allow only `A-Z a-z 0-9 - _ / = .`; `.` separates our key's tokens. */
const kvSafe = /^[A-Za-z0-9_-]+$/;

/**
 * The KV token of a catalog key: the key itself when it is KV-safe (every meter key is, so
 * meters keep the keys they always had), otherwise `=` + base64url of it (`=` never occurs in a
 * safe key, so the two cannot collide). Customer keys are the `customer` of events: any text.
 */
export function kvToken(key: string): string {
  return kvSafe.test(key) ? key : `=${Buffer.from(key, "utf8").toString("base64url")}`;
}

/** Canonical JSON: object keys sorted, undefined members left out. Two definitions are equal iff equal here. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** The definition part of a stored object. */
export function definitionOf<D>(v: Versioned<D>): D {
  const { version: _v, applied_at: _a, ...def } = v;
  return def as D;
}

/**
 * One kind of versioned catalog object in the catalog's NATS KV bucket:
 *
 * - `<pointer>.<key>` holds the current definition with its `version` and `applied_at`;
 * - `<history>.<key>.<version>` holds every version ever applied, so "which definition produced
 *   this number" stays answerable after changes (invoices name the versions they used).
 *
 * Each process follows the pointers through a KV watch and keeps the current objects in memory,
 * so reads never wait on NATS and a change applied anywhere is seen everywhere within milliseconds.
 */
export class VersionedCollection<D extends { key: string }> {
  private readonly current = new Map<string, Versioned<D>>();
  private stopWatch: (() => void) | null = null;
  private watching: Promise<void> | null = null;

  constructor(
    private readonly kv: KV,
    private readonly kind: VersionedKind<D>,
    private readonly log: Logger | undefined,
    /** Fault injection for crash tests: SIGKILL right after a claim (TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM). */
    private readonly crashAfterClaim = false,
  ) {}

  /** Loads every current object and keeps following changes until {@link close}. */
  async start(): Promise<void> {
    const pointer = `${this.kind.pointer}.>`;
    const w = await watchLoaded(
      this.kv,
      { key: pointer },
      (e) => {
        if (e.operation === "PUT") {
          const v = this.parseStored(e.json());
          if (v !== null) this.current.set(v.key, v);
          else this.log?.warn({ kvKey: e.key }, `ignoring malformed ${this.kind.noun} record`);
        } else {
          for (const [key, v] of this.current) {
            if (`${this.kind.pointer}.${kvToken(v.key)}` === e.key) this.current.delete(key);
          }
        }
      },
      `${this.kind.noun} watch`,
      { reset: () => this.current.clear(), ...(this.log ? { log: this.log } : {}) },
    );
    this.stopWatch = w.stop;
    this.watching = w.done;
  }

  async close(): Promise<void> {
    this.stopWatch?.();
    await this.watching?.catch(() => undefined);
  }

  /** The current version of an object, or undefined. */
  get(key: string): Versioned<D> | undefined {
    return this.current.get(key);
  }

  /** Every current object, by key. */
  list(): Versioned<D>[] {
    return [...this.current.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Every version of an object, oldest first (empty when it never existed). */
  async history(key: string): Promise<Versioned<D>[]> {
    const out: Versioned<D>[] = [];
    // A crash right after a claim leaves the current version without its record (see applyOne).
    const current = this.current.get(key);
    const names: string[] = [];
    for await (const k of await this.kv.keys(`${this.kind.history}.${kvToken(key)}.*`)) names.push(k);
    for (const k of names) {
      const e = await this.kv.get(k);
      const v = e === null || e.operation !== "PUT" ? null : this.parseStored(e.json());
      if (v !== null) out.push(v);
    }
    if (current !== undefined && !out.some((v) => v.version === current.version)) out.push(current);
    return out.sort((a, b) => a.version - b.version);
  }

  /** One version of an object, or undefined. */
  async version(key: string, version: number): Promise<Versioned<D> | undefined> {
    const current = this.current.get(key);
    if (current?.version === version) return current;
    const e = await this.kv.get(this.historyKey(key, version));
    return (e === null || e.operation !== "PUT" ? null : this.parseStored(e.json())) ?? undefined;
  }

  /**
   * Applies definitions (already validated): one whose definition differs from the current one
   * gets a new version; an identical one is left alone. Objects not mentioned are kept. Safe
   * against concurrent appliers and crashes: see {@link applyOne}. Distinct keys are applied
   * several at a time (a catalog of 100,000 customers is 300,000 KV round trips); a key given
   * twice is applied in the order given.
   */
  async apply(defs: readonly D[], now = new Date()): Promise<ApplyResult[]> {
    const one = async (def: D): Promise<ApplyResult> => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.applyOne(def, now);
        } catch (err: unknown) {
          if (!(err instanceof VersionConflict) || attempt >= 20) throw err;
          // Another applier claimed the version: re-read and retry after a short jittered pause.
          await new Promise((r) => setTimeout(r, Math.random() * 20 * (attempt + 1)));
        }
      }
    };
    if (new Set(defs.map((d) => d.key)).size === defs.length) {
      return pMap(defs, one, { concurrency: 32 });
    }
    const results: ApplyResult[] = [];
    for (const def of defs) results.push(await one(def));
    return results;
  }

  /**
   * The claim of version N is one compare-and-set of the current pointer on the revision we
   * read (create-if-absent for a new object): of concurrent appliers exactly one wins, the
   * others re-read and retry. The history record is written after the claim with an idempotent
   * put, so a crash between the two leaves a current object whose record is missing: the next
   * apply of that object writes it, and {@link history} lists the current version meanwhile.
   * (The older order, record first with create-if-absent, made every later apply fail forever
   * after a crash between the two writes; a record left behind that way was never current and
   * is overwritten by the definition that really became N.)
   */
  private async applyOne(def: D, now: Date): Promise<ApplyResult> {
    const pointer = `${this.kind.pointer}.${kvToken(def.key)}`;
    const entry = await this.kv.get(pointer);
    const current = entry === null || entry.operation !== "PUT" ? null : this.parseStored(entry.json());
    if (current !== null) await this.ensureVersionRecord(current);
    if (current !== null && canonical(definitionOf(current)) === canonical(def)) {
      return { key: def.key, outcome: "unchanged", version: current.version };
    }
    const previous = current?.version ?? (entry === null ? 0 : await this.highestVersion(def.key));
    const stored = { ...def, version: previous + 1, applied_at: now.toISOString() } as Versioned<D>;
    const body = JSON.stringify(stored);
    try {
      if (entry === null) await this.kv.create(pointer, body);
      else await this.kv.update(pointer, body, entry.revision);
    } catch {
      throw new VersionConflict(
        `${this.kind.noun} ${def.key} version ${stored.version} was claimed concurrently`,
      );
    }
    if (this.crashAfterClaim) process.kill(process.pid, "SIGKILL");
    await this.kv.put(this.historyKey(def.key, stored.version), body);
    this.current.set(def.key, stored);
    this.log?.info({ [this.kind.noun]: def.key, version: stored.version }, `${this.kind.noun} applied`);
    return { key: def.key, outcome: current === null ? "created" : "updated", version: stored.version };
  }

  /** Writes the history record of the current version if a crash after its claim left it out. */
  private async ensureVersionRecord(current: Versioned<D>): Promise<void> {
    const e = await this.kv.get(this.historyKey(current.key, current.version));
    const stored = e === null || e.operation !== "PUT" ? null : this.parseStored(e.json());
    if (stored !== null && stored.applied_at === current.applied_at) return;
    await this.kv.put(this.historyKey(current.key, current.version), JSON.stringify(current));
    this.log?.warn(
      { [this.kind.noun]: current.key, version: current.version },
      `restored missing ${this.kind.noun} version record`,
    );
  }

  /** Highest version ever recorded for an object whose current pointer was deleted. */
  private async highestVersion(key: string): Promise<number> {
    let max = 0;
    for await (const k of await this.kv.keys(`${this.kind.history}.${kvToken(key)}.*`)) {
      max = Math.max(max, Number(k.slice(k.lastIndexOf(".") + 1)) || 0);
    }
    return max;
  }

  private historyKey(key: string, version: number): string {
    return `${this.kind.history}.${kvToken(key)}.${version}`;
  }

  private parseStored(v: unknown): Versioned<D> | null {
    if (v === null || typeof v !== "object") return null;
    const { version, applied_at, ...rest } = v as Record<string, unknown>;
    const def = this.kind.parse(rest);
    if (def === null || typeof version !== "number" || typeof applied_at !== "string") return null;
    return { ...def, version, applied_at };
  }
}
