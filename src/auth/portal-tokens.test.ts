import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PortalTokens, portalTokenPrefix } from "./portal-tokens.js";

const secret = Buffer.from("0123456789abcdef0123456789abcdef", "utf8"); // 32 bytes
const otherSecret = Buffer.from("fedcba9876543210fedcba9876543210", "utf8");
const T0 = Date.parse("2026-05-01T12:00:00.750Z");

/** Tokens whose clock is `clock.now`, so a test can move time. */
function tokensAt(startMs = T0, key = secret) {
  const clock = { now: startMs };
  return { clock, tokens: new PortalTokens(key, () => clock.now) };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
const hmac = (key: Buffer, payload: string) => createHmac("sha256", key).update(payload).digest("base64url");
/** A token built by hand: the payload `v` with a genuine signature under `key`. */
const forge = (v: unknown, key = secret) => {
  const payload = b64(v);
  return `${portalTokenPrefix}${payload}.${hmac(key, payload)}`;
};
const parts = (token: string) => {
  const [payload, sig] = token.slice(portalTokenPrefix.length).split(".");
  return { payload: payload!, sig: sig! };
};

describe("PortalTokens: happy path", () => {
  it("verifies a token it issued, granting its customer until the expiry", () => {
    const { tokens } = tokensAt();
    const { token, expiresAt } = tokens.issue("acme", 3600);
    expect(token.startsWith("tp1.")).toBe(true);
    expect(expiresAt).toBe(Math.floor(T0 / 1000) * 1000 + 3_600_000);
    expect(tokens.verify(token)).toMatchObject({ customer: "acme", expiresAt });
  });

  it("is accepted by another instance sharing the secret (every edge)", () => {
    const { token, expiresAt } = tokensAt().tokens.issue("acme", 60);
    expect(tokensAt().tokens.verify(token)).toMatchObject({ customer: "acme", expiresAt });
  });

  it("round-trips any customer id up to the 256-character limit (fast-check)", () => {
    const { tokens } = tokensAt();
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 256, unit: "grapheme" }), (customer) => {
        const { token, expiresAt } = tokens.issue(customer, 600);
        expect(tokens.verify(token)).toMatchObject({ customer, expiresAt });
      }),
    );
  });
});

describe("PortalTokens: expiry", () => {
  it("accepts the token until the millisecond before exp and rejects it at exp", () => {
    const { clock, tokens } = tokensAt();
    const { token, expiresAt } = tokens.issue("acme", 3600);
    clock.now = expiresAt - 1;
    expect(tokens.verify(token)?.customer).toBe("acme");
    clock.now = expiresAt;
    expect(tokens.verify(token)).toBeNull();
    clock.now = expiresAt + 86_400_000;
    expect(tokens.verify(token)).toBeNull();
  });

  it("rejects a token issued with no lifetime", () => {
    const { clock, tokens } = tokensAt(Date.parse("2026-05-01T12:00:00.000Z"));
    const { token } = tokens.issue("acme", 0);
    expect(tokens.verify(token)).toBeNull();
    clock.now += 1;
    expect(tokens.verify(token)).toBeNull();
  });
});

describe("PortalTokens: security", () => {
  it("rejects a token signed with another secret", () => {
    const { token } = tokensAt(T0, otherSecret).tokens.issue("acme", 3600);
    expect(tokensAt().tokens.verify(token)).toBeNull();
  });

  it("rejects every single-character substitution and deletion of a genuine token", () => {
    const { tokens } = tokensAt();
    const { token } = tokens.issue("acme", 3600);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ é";
    const accepted: string[] = [];
    for (let i = 0; i < token.length; i++) {
      const deleted = token.slice(0, i) + token.slice(i + 1);
      if (tokens.verify(deleted) !== null) accepted.push(`delete ${i}`);
      for (const c of alphabet) {
        if (c === token[i]) continue;
        const changed = token.slice(0, i) + c + token.slice(i + 1);
        if (tokens.verify(changed) !== null) accepted.push(`${i}: ${token[i]} -> ${c}`);
      }
    }
    expect(accepted).toEqual([]);
    expect(tokens.verify(token)).not.toBeNull();
  });

  it("rejects a payload naming another customer (or a later expiry) under the old signature", () => {
    const { tokens } = tokensAt();
    const { token, expiresAt } = tokens.issue("acme", 3600);
    const { sig } = parts(token);
    const exp = expiresAt / 1000;
    expect(tokens.verify(`${portalTokenPrefix}${b64({ c: "globex", exp })}.${sig}`)).toBeNull();
    expect(tokens.verify(`${portalTokenPrefix}${b64({ c: "acme", exp: exp + 86_400 })}.${sig}`)).toBeNull();
    // Same JSON, keys reordered: still not the signed bytes.
    expect(tokens.verify(`${portalTokenPrefix}${b64({ exp, c: "acme" })}.${sig}`)).toBeNull();
  });

  it("rejects genuinely signed payloads that are not a valid grant", () => {
    const { tokens } = tokensAt();
    const exp = Math.floor(T0 / 1000) + 3600;
    expect(tokens.verify(forge({ c: "acme", exp }))).toMatchObject({
      customer: "acme",
      expiresAt: exp * 1000,
    });
    expect(tokens.verify(forge({ c: "", exp }))).toBeNull();
    expect(tokens.verify(forge({ c: "acme" }))).toBeNull();
    expect(tokens.verify(forge({ c: "acme", exp: String(exp) }))).toBeNull();
    expect(tokens.verify(forge({ c: "acme", exp: exp + 0.5 }))).toBeNull();
    expect(tokens.verify(forge({ c: 42, exp }))).toBeNull();
    expect(tokens.verify(forge([exp]))).toBeNull();
    const notJson = Buffer.from("not json").toString("base64url");
    expect(tokens.verify(`${portalTokenPrefix}${notJson}.${hmac(secret, notJson)}`)).toBeNull();
  });

  it("rejects strings that are not portal tokens", () => {
    const { tokens } = tokensAt();
    const { token } = tokens.issue("acme", 3600);
    const { payload, sig } = parts(token);
    for (const s of [
      "",
      "tp1.",
      "tp1..",
      "tp1.a.b",
      `tp1.${payload}`,
      `tp1.${payload}.`,
      `tp1..${sig}`,
      `${token}.`,
      `${token}.extra`,
      token.slice(portalTokenPrefix.length), // prefix stripped
      `tp2.${payload}.${sig}`,
      `TP1.${payload}.${sig}`,
      ` ${token}`,
      `${token} `,
      `tally_${payload}.${sig}`,
      `tp1.${"a".repeat(4996)}`,
      "x".repeat(5000),
      `tp1.${payload}.${sig}${"A".repeat(5000)}`,
    ]) {
      expect(tokens.verify(s), JSON.stringify(s.slice(0, 60))).toBeNull();
    }
  });

  it("rejects arbitrary strings (fast-check)", () => {
    const { tokens } = tokensAt();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string().map((s) => `${portalTokenPrefix}${s}`),
        ),
        (s) => {
          expect(tokens.verify(s)).toBeNull();
        },
      ),
    );
  });

  it("refuses a secret shorter than 32 bytes", () => {
    expect(() => new PortalTokens(Buffer.alloc(0))).toThrow(/at least 32 bytes/);
    expect(() => new PortalTokens(Buffer.alloc(31, 1))).toThrow(/at least 32 bytes/);
    expect(() => new PortalTokens(Buffer.alloc(32, 1))).not.toThrow();
  });
});

describe("PortalTokens: token ids (live stream caps count per token)", () => {
  it("gives one token one id on every verify, and two tokens of one customer different ids", () => {
    const { clock, tokens } = tokensAt();
    const a = tokens.issue("acme", 3600).token;
    clock.now += 1000;
    const b = tokens.issue("acme", 3600).token;
    expect(tokens.verify(a)!.tokenId).toBe(tokens.verify(a)!.tokenId);
    expect(tokens.verify(a)!.tokenId).not.toBe(tokens.verify(b)!.tokenId);
    // Not the signature itself: the id can be logged or used as a key without being a credential.
    expect(a).not.toContain(tokens.verify(a)!.tokenId);
  });
});
