import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startXeroServer, type XeroTestServer } from "./xero-server/index.js";

/** The local Xero server over HTTP, as a connector sees it (plain fetch, no SDK). */
let srv: XeroTestServer;

async function token(s: XeroTestServer = srv): Promise<string> {
  const r = await fetch(`${s.url}/connect/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${s.clientId}:${s.clientSecret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials",
  });
  expect(r.status).toBe(200);
  return ((await r.json()) as { access_token: string }).access_token;
}

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; key?: string; tok?: string; headers?: Record<string, string> } = {},
) {
  const r = await fetch(`${srv.url}/api.xro/2.0${path}`, {
    method,
    headers: {
      authorization: `Bearer ${opts.tok ?? (await token())}`,
      "content-type": "application/json",
      accept: "application/json",
      ...(opts.key ? { "idempotency-key": opts.key } : {}),
      ...opts.headers,
    },
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  return { status: r.status, headers: r.headers, json: (await r.json()) as Record<string, any> };
}

const journal = (narration: string, amount = 100, credit = "200") => ({
  Narration: narration,
  Date: "2026-11-30",
  Status: "POSTED",
  LineAmountTypes: "NoTax",
  JournalLines: [
    { LineAmount: amount, AccountCode: "120", Description: "receivable" },
    { LineAmount: -amount, AccountCode: credit, Description: "revenue" },
  ],
});

beforeAll(async () => {
  srv = await startXeroServer({ limits: { perMinute: 1000 } });
});
afterAll(async () => {
  await srv.stop();
});
beforeEach(() => {
  srv.faults.clear();
  srv.requests.clear();
  srv.limits.reset();
});

describe("xero-server: auth", () => {
  it("issues client-credentials tokens; an expired token gets 401 with invalid_token", async () => {
    const bad = await fetch(`${srv.url}/connect/token`, {
      method: "POST",
      headers: { authorization: `Basic ${Buffer.from("x:y").toString("base64")}` },
      body: "grant_type=client_credentials",
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: "invalid_client" });
    const tok = await token();
    expect((await call("GET", "/Organisation", { tok })).status).toBe(200);
    srv.expireTokens();
    const r = await call("GET", "/Organisation", { tok });
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toContain("invalid_token");
    const wrongTenant = await call("GET", "/Organisation", { headers: { "xero-tenant-id": "nope" } });
    expect(wrongTenant.status).toBe(403);
    expect(
      (await call("GET", "/Organisation", { headers: { "xero-tenant-id": srv.state.tenantId } })).status,
    ).toBe(200);
  });
});

describe("xero-server: manual journals", () => {
  it("creates balanced journals and lists/gets them with exact amounts", async () => {
    const r = await call("PUT", "/ManualJournals?summarizeErrors=false", {
      body: { ManualJournals: [journal("[tally:je_a]", 12.34), journal("[tally:je_b]", 0.01)] },
    });
    expect(r.status).toBe(200);
    expect(r.json.ManualJournals.map((j: any) => j.StatusAttributeString)).toEqual(["OK", "OK"]);
    const id = r.json.ManualJournals[0].ManualJournalID as string;
    const got = await call("GET", `/ManualJournals/${id}`);
    expect(got.json.ManualJournals[0].JournalLines.map((l: any) => l.LineAmount)).toEqual([12.34, -12.34]);
    expect(got.json.ManualJournals[0].Date).toBe(`/Date(${Date.parse("2026-11-30T00:00:00Z")}+0000)/`);
    const listed = await call(
      "GET",
      `/ManualJournals?page=1&where=${encodeURIComponent('Narration.Contains("je_b")')}`,
    );
    expect(listed.json.ManualJournals.map((j: any) => j.Narration)).toEqual(["[tally:je_b]"]);
    const since = await call("GET", "/ManualJournals?page=1", {
      headers: { "if-modified-since": new Date(srv.clock.now() + 1000).toISOString() },
    });
    expect(since.json.ManualJournals).toEqual([]);
    expect((await call("GET", "/ManualJournals/00000000-0000-0000-0000-000000000000")).status).toBe(404);
  });

  it("validation: unbalanced, one line, unknown account, no narration; summarizeErrors decides all-or-nothing", async () => {
    const bad = [
      {
        ...journal("unbalanced"),
        JournalLines: [journal("x").JournalLines[0], { LineAmount: -90, AccountCode: "200" }],
      },
      { ...journal("one line"), JournalLines: [journal("x").JournalLines[0]] },
      journal("unknown account", 5, "999"),
      { ...journal(""), Narration: "" },
    ];
    const before = srv.state.allJournals().length;
    const all = await call("PUT", "/ManualJournals", { body: { ManualJournals: [journal("ok"), ...bad] } });
    expect(all.status).toBe(400);
    expect(all.json.Type).toBe("ValidationException");
    expect(all.json.Elements).toHaveLength(4);
    expect(all.json.Elements[0].ValidationErrors[0].Message).toBe(
      "The total debits (100.00) must equal total credits (-90.00)",
    );
    expect(srv.state.allJournals().length).toBe(before);
    const mixed = await call("PUT", "/ManualJournals?summarizeErrors=false", {
      body: { ManualJournals: [journal("ok"), ...bad] },
    });
    expect(mixed.status).toBe(200);
    expect(mixed.json.ManualJournals.map((j: any) => j.StatusAttributeString)).toEqual([
      "OK",
      "ERROR",
      "ERROR",
      "ERROR",
      "ERROR",
    ]);
    expect(mixed.json.ManualJournals[3].ValidationErrors[0].Message).toContain("Account code '999'");
    expect(srv.state.allJournals().length).toBe(before + 1);
  });

  it("Idempotency-Key: replay, different request, in-flight, expiry, 128 chars", async () => {
    const body = { ManualJournals: [journal("[tally:idem]")] };
    const a = await call("PUT", "/ManualJournals", { body, key: "k1" });
    const b = await call("PUT", "/ManualJournals", { body, key: "k1" });
    expect(b.json.ManualJournals[0].ManualJournalID).toBe(a.json.ManualJournals[0].ManualJournalID);
    expect(srv.state.journalsWithNarration("[tally:idem]")).toHaveLength(1);
    expect(srv.requests.of("PUT /api.xro/2.0/ManualJournals").map((r) => r.replayed)).toEqual([false, true]);
    const other = await call("PUT", "/ManualJournals", {
      body: { ManualJournals: [journal("[tally:idem2]")] },
      key: "k1",
    });
    expect(other.status).toBe(400);
    expect((await call("PUT", "/ManualJournals", { body, key: "x".repeat(129) })).status).toBe(400);
    srv.faults.latency({ ms: 300, count: 1 });
    const [first, second] = await Promise.all([
      call("PUT", "/ManualJournals", { body: { ManualJournals: [journal("[tally:race]")] }, key: "k2" }),
      new Promise((r) => setTimeout(r, 100)).then(() =>
        call("PUT", "/ManualJournals", { body: { ManualJournals: [journal("[tally:race]")] }, key: "k2" }),
      ),
    ]);
    expect([first.status, second.status]).toEqual([200, 409]);
    srv.clock.advance(360_000);
    await call("PUT", "/ManualJournals", { body, key: "k1" });
    expect(srv.state.journalsWithNarration("[tally:idem]")).toHaveLength(2);
  });

  it("a drop after commit created the journal; the replay under the same key returns it", async () => {
    srv.faults.drop({ count: 1, when: "after-commit" });
    const body = { ManualJournals: [journal("[tally:drop]")] };
    await expect(call("PUT", "/ManualJournals", { body, key: "k-drop" })).rejects.toThrow();
    expect(srv.state.journalsWithNarration("[tally:drop]")).toHaveLength(1);
    const again = await call("PUT", "/ManualJournals", { body, key: "k-drop" });
    expect(again.json.ManualJournals[0].ManualJournalID).toBe(
      srv.state.journalsWithNarration("[tally:drop]")[0]!.ManualJournalID,
    );
  });
});

describe("xero-server: rate limits", () => {
  it("429 with Retry-After and X-Rate-Limit-Problem past the minute limit; remaining headers", async () => {
    const s = await startXeroServer({ limits: { perMinute: 3, minuteWindowMs: 1000 } });
    try {
      const tok = await token(s);
      const get = () =>
        fetch(`${s.url}/api.xro/2.0/Accounts`, { headers: { authorization: `Bearer ${tok}` } });
      const rs = [];
      for (let i = 0; i < 4; i++) rs.push(await get());
      expect(rs.map((r) => r.status)).toEqual([200, 200, 200, 429]);
      expect(rs.map((r) => r.headers.get("x-minlimit-remaining"))).toEqual(["2", "1", "0", "0"]);
      expect(rs[0]!.headers.get("x-daylimit-remaining")).toBe("4999");
      expect(rs[3]!.headers.get("x-rate-limit-problem")).toBe("minute");
      expect(Number(rs[3]!.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 1050));
      expect((await get()).status).toBe(200);
      expect(s.requests.maxInWindow(1000, (e) => e.status !== 429)).toBeLessThanOrEqual(3);
    } finally {
      await s.stop();
    }
  });

  it("more than 5 calls in progress: 429 concurrent", async () => {
    srv.faults.latency({ ms: 300, count: 6 });
    const tok = await token();
    const rs = await Promise.all(
      Array.from({ length: 6 }, () =>
        fetch(`${srv.url}/api.xro/2.0/Accounts`, { headers: { authorization: `Bearer ${tok}` } }),
      ),
    );
    const limited = rs.filter((r) => r.status === 429);
    expect(limited).toHaveLength(1);
    expect(limited[0]!.headers.get("x-rate-limit-problem")).toBe("concurrent");
  });
});
