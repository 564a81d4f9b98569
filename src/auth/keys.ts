import { createHash, hash, randomBytes } from "node:crypto";
import type { JetStreamClient, KV } from "nats";
import { z } from "zod";
import type { Logger } from "../observability/index.js";

/** What a key may do. `admin` implies every other scope. */
export const scopes = ["ingest", "read", "admin"] as const;
export type Scope = (typeof scopes)[number];

/** A stored API key: never the key itself, only its SHA-256. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  scopes: Scope[];
  createdAt: string;
}

const recordSchema = z.object({
  id: z.string(),
  name: z.string(),
  scopes: z.array(z.enum(scopes)),
  createdAt: z.string(),
});

/**
 * SHA-256 of a key, hex. Keys are 192-bit random secrets, so a fast hash is sufficient
 * (no dictionary to attack) and keeps verification cheap on every request.
 */
export function hashKey(key: string): string {
  // One-shot crypto.hash (Node ≥ 20.12) avoids a Hash object per request on the ingest path.
  return typeof hash === "function"
    ? hash("sha256", key, "hex")
    : createHash("sha256").update(key).digest("hex");
}

/** A new random key: `tally_` + 32 base64url characters (192 bits). */
export function generateKey(): string {
  return `tally_${randomBytes(24).toString("base64url")}`;
}

export function hasScope(rec: ApiKeyRecord, scope: Scope): boolean {
  return rec.scopes.includes("admin") || rec.scopes.includes(scope);
}

/**
 * API keys in a NATS KV bucket, keyed by hash. Each process keeps the whole (small) set in
 * memory through a KV watch, so verification costs one hash and one map lookup, and a
 * revoked key stops working everywhere within the watch's propagation delay (milliseconds).
 */
export class KeyStore {
  private readonly byHash = new Map<string, ApiKeyRecord>();
  private watching: Promise<void> | null = null;
  private stopWatch: (() => void) | null = null;

  private constructor(
    private readonly kv: KV,
    private readonly log: Logger | undefined,
  ) {}

  static async open(js: JetStreamClient, bucket: string, replicas: number, log?: Logger): Promise<KeyStore> {
    const kv = await js.views.kv(bucket, { history: 5, replicas });
    return new KeyStore(kv, log);
  }

  /** Loads every key and keeps following changes until {@link close}. */
  async start(): Promise<void> {
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => (initialized = resolve));
    const iter = await this.kv.watch({ initializedFn: () => initialized() });
    this.stopWatch = () => iter.stop();
    this.watching = (async () => {
      for await (const e of iter) {
        if (e.operation === "PUT") {
          const parsed = recordSchema.safeParse(e.json());
          if (parsed.success) this.byHash.set(e.key, parsed.data);
          else this.log?.warn({ reason: parsed.error.message }, "ignoring malformed key record");
        } else {
          this.byHash.delete(e.key);
        }
      }
    })();
    await ready;
  }

  async close(): Promise<void> {
    this.stopWatch?.();
    await this.watching?.catch(() => undefined);
  }

  /** The record of a presented key, or null. */
  verify(presented: string): ApiKeyRecord | null {
    // The lookup is by SHA-256 of the presented key: timing reveals nothing about stored keys
    // (an attacker controls the input of the hash, not its output), so no second comparison.
    return this.byHash.get(hashKey(presented)) ?? null;
  }

  /** Stores a key (by hash) and returns its record. */
  async put(
    key: string,
    name: string,
    keyScopes: Scope[],
    id = randomBytes(6).toString("hex"),
  ): Promise<ApiKeyRecord> {
    const rec: ApiKeyRecord = { id, name, scopes: keyScopes, createdAt: new Date().toISOString() };
    const h = hashKey(key);
    await this.kv.put(h, JSON.stringify(rec));
    this.byHash.set(h, rec);
    return rec;
  }

  /** Creates a new random key; the plaintext is returned once and never stored. */
  async create(name: string, keyScopes: Scope[]): Promise<{ key: string; record: ApiKeyRecord }> {
    const key = generateKey();
    return { key, record: await this.put(key, name, keyScopes) };
  }

  list(): ApiKeyRecord[] {
    return [...this.byHash.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Deletes the key with this id; false when unknown. */
  async revoke(id: string): Promise<boolean> {
    for (const [h, rec] of this.byHash) {
      if (rec.id === id) {
        await this.kv.delete(h);
        this.byHash.delete(h);
        return true;
      }
    }
    return false;
  }
}
