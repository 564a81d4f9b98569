import { afterEach, describe, expect, it, vi } from "vitest";
import { loadedWithin } from "./kv.js";

describe("loadedWithin", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("rejects a watch that delivers nothing for the timeout before its initial values are in", async () => {
    vi.useFakeTimers();
    const never = new Promise<void>(() => undefined);
    const result = loadedWithin(never, 30_000, "meter watch", () => 0);
    const check = expect(result).rejects.toThrow(/meter watch: nothing delivered for 30000 ms/);
    await vi.advanceTimersByTimeAsync(31_000);
    await check;
  });

  it("keeps waiting, past the timeout, while values keep coming; resolves when they are all in", async () => {
    vi.useFakeTimers();
    let received = 0;
    let done!: () => void;
    const ready = new Promise<void>((r) => (done = r));
    let settled = false;
    const result = loadedWithin(ready, 30_000, "customer watch", () => received).then(() => (settled = true));
    for (let s = 0; s < 120; s++) {
      received++; // a large bucket: two minutes of steady delivery
      await vi.advanceTimersByTimeAsync(1000);
    }
    expect(settled).toBe(false);
    done();
    await result;
    expect(settled).toBe(true);
  });
});
