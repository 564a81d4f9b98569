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
  ) {}

  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    log?: Logger,
  ): Promise<CatalogStore> {
    const kv = await js.views.kv(bucket, { history: 10, replicas });
    return new CatalogStore(kv, log);
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
    const keys = await this.kv.keys(`meter_versions.${key}.*`);
    const names: string[] = [];
    for await (const k of keys) names.push(k);
    for (const k of names) {
      const e = await this.kv.get(k);
      const m = e === null || e.operation !== "PUT" ? null : parseStored(e.json());
      if (m !== null) out.push(m);
    }
    return out.sort((a, b) => a.version - b.version);
  }

  /**
   * Applies meter definitions (already validated): a meter whose definition differs from the
   * current one gets a new version; an identical one is left alone. Meters not mentioned are
   * kept. Safe against concurrent appliers: a version is claimed with a create-if-absent.
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

  private async applyOne(def: MeterDefinition, now: Date): Promise<ApplyResult> {
    const entry = await this.kv.get(`meters.${def.key}`);
    const current = entry === null || entry.operation !== "PUT" ? null : parseStored(entry.json());
    if (current !== null && sameDefinition(definitionOf(current), def)) {
      return { key: def.key, outcome: "unchanged", version: current.version };
    }
    const meter: Meter = { ...def, version: (current?.version ?? 0) + 1, applied_at: now.toISOString() };
    const body = JSON.stringify(meter);
    try {
      await this.kv.create(`meter_versions.${def.key}.${meter.version}`, body);
    } catch {
      throw new VersionConflict(`meter ${def.key} version ${meter.version} was created concurrently`);
    }
    await this.kv.put(`meters.${def.key}`, body);
    this.meters.set(def.key, meter);
    this.log?.info({ meter: def.key, version: meter.version }, "meter applied");
    return { key: def.key, outcome: current === null ? "created" : "updated", version: meter.version };
  }
}

function parseStored(v: unknown): Meter | null {
  if (v === null || typeof v !== "object") return null;
  const { version, applied_at, ...def } = v as Record<string, unknown>;
  const parsed = meterSchema.safeParse(def);
  if (!parsed.success || typeof version !== "number" || typeof applied_at !== "string") return null;
  return { ...parsed.data, version, applied_at };
}
