import type { JetStreamClient, KV } from "nats";
import type { Logger } from "../observability/index.js";
import { definitionOf, meterSchema, sameDefinition, type Meter, type MeterDefinition } from "./meter.js";

/** What applying one meter definition did. */
export interface ApplyResult {
  key: string;
  outcome: "created" | "updated" | "unchanged";
  version: number;
}

/** Thrown when another writer created the same version first; apply() retries on it. */
class VersionConflict extends Error {}

/**
 * Meters in a NATS KV bucket (`<prefix>_catalog`), versioned:
 *
 * - `meters.<key>` holds the current definition with its `version` and `applied_at`;
 * - `meter_versions.<key>.<version>` holds every version ever applied, never overwritten,
 *   so "which meter definition produced this number" stays answerable after changes.
 *
 * Each process follows the bucket through a KV watch and keeps the (small) set of current
 * meters in memory, so reads never wait on NATS and a change applied anywhere is seen
 * everywhere within milliseconds.
 */
export class CatalogStore {
  private readonly meters = new Map<string, Meter>();
  private stopWatch: (() => void) | null = null;
  private watching: Promise<void> | null = null;

  private constructor(
    private readonly kv: KV,
    private readonly log: Logger | undefined,
    private readonly crashAfterClaim: boolean,
  ) {}

  /** `crashAfterClaim`: fault injection for crash tests (TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM). */
  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    log?: Logger,
    crashAfterClaim = false,
  ): Promise<CatalogStore> {
    const kv = await js.views.kv(bucket, { history: 10, replicas });
    return new CatalogStore(kv, log, crashAfterClaim);
  }

  /** Loads every current meter and keeps following changes until {@link close}. */
  async start(): Promise<void> {
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => (initialized = resolve));
    const iter = await this.kv.watch({ key: "meters.>", initializedFn: () => initialized() });
    this.stopWatch = () => iter.stop();
    this.watching = (async () => {
      for await (const e of iter) {
        const key = e.key.slice("meters.".length);
        if (e.operation === "PUT") {
          const m = parseStored(e.json());
          if (m !== null) this.meters.set(key, m);
          else this.log?.warn({ meter: key }, "ignoring malformed meter record");
        } else {
          this.meters.delete(key);
        }
      }
    })();
    await ready;
  }

  async close(): Promise<void> {
    this.stopWatch?.();
    await this.watching?.catch(() => undefined);
  }

  /** The current version of a meter, or undefined. */
  get(key: string): Meter | undefined {
    return this.meters.get(key);
  }

  /** Every current meter, by key. */
  list(): Meter[] {
    return [...this.meters.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Every version of a meter, oldest first (empty when the meter never existed). */
  async history(key: string): Promise<Meter[]> {
    const out: Meter[] = [];
    // A crash right after a claim leaves the current version without its record (see applyOne).
    const current = this.meters.get(key);
    const keys = await this.kv.keys(`meter_versions.${key}.*`);
    const names: string[] = [];
    for await (const k of keys) names.push(k);
    for (const k of names) {
      const e = await this.kv.get(k);
      const m = e === null || e.operation !== "PUT" ? null : parseStored(e.json());
      if (m !== null) out.push(m);
    }
    if (current !== undefined && !out.some((m) => m.version === current.version)) out.push(current);
    return out.sort((a, b) => a.version - b.version);
  }

  /**
   * Applies meter definitions (already validated): a meter whose definition differs from the
   * current one gets a new version; an identical one is left alone. Meters not mentioned are
   * kept. Safe against concurrent appliers and crashes: see {@link applyOne}.
   */
  async apply(defs: readonly MeterDefinition[], now = new Date()): Promise<ApplyResult[]> {
    const results: ApplyResult[] = [];
    for (const def of defs) {
      for (let attempt = 0; ; attempt++) {
        try {
          results.push(await this.applyOne(def, now));
          break;
        } catch (err: unknown) {
          if (!(err instanceof VersionConflict) || attempt >= 20) throw err;
          // Another applier claimed the version: re-read and retry after a short jittered pause.
          await new Promise((r) => setTimeout(r, Math.random() * 20 * (attempt + 1)));
        }
      }
    }
    return results;
  }

  /**
   * The claim of version N is one compare-and-set of the current pointer `meters.<key>` on the
   * revision we read (create-if-absent for a new meter): of concurrent appliers exactly one
   * wins, the others re-read and retry. The history record `meter_versions.<key>.<N>` is written
   * after the claim with an idempotent put, so a crash between the two leaves a current meter
   * whose record is missing: the next apply of that meter writes it, and {@link history} lists
   * the current version meanwhile. (The older order, record first with create-if-absent, made
   * every later apply fail forever after a crash between the two writes; a record left behind
   * that way was never current and is overwritten by the definition that really became N.)
   */
  private async applyOne(def: MeterDefinition, now: Date): Promise<ApplyResult> {
    const pointer = `meters.${def.key}`;
    const entry = await this.kv.get(pointer);
    const current = entry === null || entry.operation !== "PUT" ? null : parseStored(entry.json());
    if (current !== null) await this.ensureVersionRecord(current);
    if (current !== null && sameDefinition(definitionOf(current), def)) {
      return { key: def.key, outcome: "unchanged", version: current.version };
    }
    const previous = current?.version ?? (entry === null ? 0 : await this.highestVersion(def.key));
    const meter: Meter = { ...def, version: previous + 1, applied_at: now.toISOString() };
    const body = JSON.stringify(meter);
    try {
      if (entry === null) await this.kv.create(pointer, body);
      else await this.kv.update(pointer, body, entry.revision);
    } catch {
      throw new VersionConflict(`meter ${def.key} version ${meter.version} was claimed concurrently`);
    }
    injectCrash(this.crashAfterClaim);
    await this.kv.put(versionKey(def.key, meter.version), body);
    this.meters.set(def.key, meter);
    this.log?.info({ meter: def.key, version: meter.version }, "meter applied");
    return { key: def.key, outcome: current === null ? "created" : "updated", version: meter.version };
  }

  /** Writes the history record of the current version if a crash after its claim left it out. */
  private async ensureVersionRecord(current: Meter): Promise<void> {
    const e = await this.kv.get(versionKey(current.key, current.version));
    const stored = e === null || e.operation !== "PUT" ? null : parseStored(e.json());
    if (stored !== null && stored.applied_at === current.applied_at) return;
    await this.kv.put(versionKey(current.key, current.version), JSON.stringify(current));
    this.log?.warn({ meter: current.key, version: current.version }, "restored missing meter version record");
  }

  /** Highest version ever recorded for a meter whose current pointer was deleted. */
  private async highestVersion(key: string): Promise<number> {
    let max = 0;
    for await (const k of await this.kv.keys(`meter_versions.${key}.*`)) {
      max = Math.max(max, Number(k.slice(k.lastIndexOf(".") + 1)) || 0);
    }
    return max;
  }
}

function versionKey(key: string, version: number): string {
  return `meter_versions.${key}.${version}`;
}

/**
 * Fault injection (tests only, `TALLY_TEST_CRASH_AFTER_CATALOG_CLAIM=1`): die like a killed
 * process right after the claim of a version, before its history record is written.
 */
function injectCrash(enabled: boolean): void {
  if (enabled) process.kill(process.pid, "SIGKILL");
}

function parseStored(v: unknown): Meter | null {
  if (v === null || typeof v !== "object") return null;
  const { version, applied_at, ...def } = v as Record<string, unknown>;
  const parsed = meterSchema.safeParse(def);
  if (!parsed.success || typeof version !== "number" || typeof applied_at !== "string") return null;
  return { ...parsed.data, version, applied_at };
}
