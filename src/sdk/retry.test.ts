import { describe, expect, it } from "vitest";
import { backoffMs, defaultRetry, isRetryableStatus, parseRetryAfter } from "./retry.js";

describe("backoffMs", () => {
  it("doubles from initialDelayMs, jittered between half and all, capped at maxDelayMs", () => {
    const p = { ...defaultRetry, initialDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffMs(p, 1, () => 0)).toBe(50);
    expect(backoffMs(p, 1, () => 1)).toBe(100);
    expect(backoffMs(p, 3, () => 1)).toBe(400);
    expect(backoffMs(p, 3, () => 0)).toBe(200);
    expect(backoffMs(p, 30, () => 1)).toBe(1000);
    expect(backoffMs(p, 30, () => 0)).toBe(500);
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("2026-11-25T10:00:00Z");
  it("reads delay-seconds and HTTP dates", () => {
    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Wed, 25 Nov 2026 10:00:07 GMT", now)).toBe(7000);
    expect(parseRetryAfter("Wed, 25 Nov 2026 09:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter(["2", "9"], now)).toBe(2000);
  });
  it("ignores absent or garbage values", () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("-1", now)).toBeUndefined();
  });
});

describe("isRetryableStatus", () => {
  it("retries 408, 429 and 5xx only", () => {
    expect([408, 429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 413, 415].some(isRetryableStatus)).toBe(false);
  });
});
