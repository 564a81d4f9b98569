import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/index.js";
import { decideAttempt, maxRetryAfterMs, parseRetryAfter } from "./retry.js";

const spec = [
  5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000, 86_400_000,
];

describe("decideAttempt", () => {
  it("2xx is success, 410 disables, everything else (3xx included) is retried", () => {
    expect(decideAttempt({ status: 200 }, 1, spec, 0.5)).toEqual({ kind: "success" });
    expect(decideAttempt({ status: 299 }, 1, spec, 0.5)).toEqual({ kind: "success" });
    expect(decideAttempt({ status: 410 }, 1, spec, 0.5)).toEqual({ kind: "gone" });
    for (const status of [301, 302, 400, 404, 429, 500, 502, 504, null]) {
      expect(decideAttempt({ status }, 1, spec, 0.5).kind).toBe("retry");
    }
  });

  it("follows the Standard Webhooks schedule with ±10 % jitter, then gives up after 10 attempts", () => {
    const waits = spec.map((_, i) => decideAttempt({ status: 500 }, i + 1, spec, 0.5));
    expect(waits).toEqual(spec.map((ms) => ({ kind: "retry", delayMs: ms })));
    expect(decideAttempt({ status: 500 }, 1, spec, 0)).toEqual({ kind: "retry", delayMs: 4_500 });
    expect(decideAttempt({ status: 500 }, 1, spec, 0.9999999)).toEqual({ kind: "retry", delayMs: 5_500 });
    expect(decideAttempt({ status: 500 }, 10, spec, 0.5)).toEqual({ kind: "exhausted" });
    // ≈ 75.6 h in all; it is the default of TALLY_WEBHOOK_RETRY_SCHEDULE.
    expect(spec.reduce((a, b) => a + b, 0) / 3_600_000).toBeCloseTo(75.6, 1);
    expect(loadConfig({}).webhooks.retryScheduleMs).toEqual(spec);
  });

  it("a Retry-After later than the schedule wins, capped at a day; an earlier one does not shorten it", () => {
    expect(decideAttempt({ status: 429, retryAfterMs: 60_000 }, 1, spec, 0.5)).toEqual({
      kind: "retry",
      delayMs: 60_000,
    });
    expect(decideAttempt({ status: 503, retryAfterMs: 1_000 }, 1, spec, 0.5)).toEqual({
      kind: "retry",
      delayMs: 5_000,
    });
    expect(decideAttempt({ status: 429, retryAfterMs: 10 * maxRetryAfterMs }, 1, spec, 0.5)).toEqual({
      kind: "retry",
      delayMs: maxRetryAfterMs,
    });
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("120", 0)).toBe(120_000);
    expect(parseRetryAfter(new Date(90_000).toUTCString(), 30_000)).toBe(60_000);
    expect(parseRetryAfter("soon", 0)).toBeUndefined();
    expect(parseRetryAfter(undefined, 0)).toBeUndefined();
  });
});
