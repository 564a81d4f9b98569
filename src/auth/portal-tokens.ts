import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { JetStreamClient } from "nats";
import { z } from "zod";

/** Prefix of every portal token; tells them apart from API keys (`tally_…`). */
export const portalTokenPrefix = "tp1.";

/** Longest lifetime an admin may give a portal token. */
export const maxPortalTokenSeconds = 30 * 24 * 3600;

/** What a valid portal token grants: reading the usage of exactly one customer until `expiresAt`. */
export interface PortalGrant {
  customer: string;
  expiresAt: number;
  /** Tells tokens apart (e.g. to cap one token's live streams); derived from the signature, not secret-bearing. */
  tokenId: string;
}

const payloadSchema = z.object({ c: z.string().min(1), exp: z.number().int() });

/**
 * Signed, expiring, customer-scoped tokens for the customer usage page and the usage API.
 * `tp1.<payload>.<signature>`: base64url JSON `{ c: customer, exp: epoch seconds }` and its
 * HMAC-SHA256 under a secret every edge shares. Nothing is stored per token; a token stops
 * working when it expires or when the secret is rotated.
 *
 * @example
 * ```ts
 * const token = tokens.issue("acme", 3600);
 * tokens.verify(token); // { customer: "acme", expiresAt: ..., tokenId: ... }
 * ```
 */
export class PortalTokens {
  constructor(
    private readonly secret: Buffer,
    private readonly now: () => number = Date.now,
  ) {
    if (secret.length < 32) throw new Error("portal token secret must be at least 32 bytes");
  }

  /**
   * Loads the signing secret shared by every edge: `configured` when set (TALLY_PORTAL_SECRET),
   * otherwise a random one created once in the NATS KV bucket `bucket` (first writer wins).
   */
  static async open(
    js: JetStreamClient,
    bucket: string,
    replicas: number,
    configured?: string,
  ): Promise<PortalTokens> {
    if (configured !== undefined && configured !== "")
      return new PortalTokens(Buffer.from(configured, "utf8"));
    const kv = await js.views.kv(bucket, { history: 1, replicas });
    try {
      await kv.create("portal_signing_key", randomBytes(32).toString("base64url"));
    } catch {
      // another edge created it first; use theirs
    }
    const e = await kv.get("portal_signing_key");
    if (e === null) throw new Error("portal signing key missing from KV");
    return new PortalTokens(Buffer.from(e.string(), "base64url"));
  }

  /** A token for `customer` valid for `ttlSeconds`. */
  issue(customer: string, ttlSeconds: number): { token: string; expiresAt: number } {
    const expiresAt = Math.floor(this.now() / 1000) + Math.trunc(ttlSeconds);
    const payload = Buffer.from(JSON.stringify({ c: customer, exp: expiresAt })).toString("base64url");
    return { token: `${portalTokenPrefix}${payload}.${this.sign(payload)}`, expiresAt: expiresAt * 1000 };
  }

  /** The grant of a genuine, unexpired token; null for anything else. */
  verify(token: string): PortalGrant | null {
    if (!token.startsWith(portalTokenPrefix) || token.length > 4096) return null;
    const [payload, sig, ...rest] = token.slice(portalTokenPrefix.length).split(".");
    if (payload === undefined || sig === undefined || rest.length > 0) return null;
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(sig);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
    let parsed: z.infer<typeof payloadSchema>;
    try {
      parsed = payloadSchema.parse(JSON.parse(Buffer.from(payload, "base64url").toString("utf8")));
    } catch {
      return null;
    }
    if (parsed.exp * 1000 <= this.now()) return null;
    return {
      customer: parsed.c,
      expiresAt: parsed.exp * 1000,
      tokenId: createHash("sha256").update(sig).digest("base64url").slice(0, 22),
    };
  }

  private sign(payload: string): string {
    return createHmac("sha256", this.secret).update(payload).digest("base64url");
  }
}
