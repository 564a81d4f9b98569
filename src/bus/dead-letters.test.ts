import { describe, expect, it } from "vitest";
import { partitionOfSubject, stateOf, type DeadLetter, type Resolution } from "./dead-letters.js";
import { busNames } from "./names.js";

const letter: DeadLetter = {
  seq: 7,
  time: "2026-11-29T10:00:00.000Z",
  reason: "permanent ClickHouse insert error",
  originalSubject: "tally.events.2",
  originalSeq: "41",
  events: 3,
  oldestReceivedMs: Date.parse("2026-11-29T09:59:58.000Z"),
};
const replayed = (events_seq: number, dlq_time = letter.time): Resolution => ({
  action: "replayed",
  at: "2026-11-29T11:00:00.000Z",
  by: "ops",
  dlq_time,
  events: 3,
  events_subject: "tally.events.2",
  events_partition: 2,
  events_seq,
});

describe("dead-letter state", () => {
  it("holds until the replayed copy is below its partition's ack floor", () => {
    expect(stateOf(letter, undefined, [0, 0, 0, 0])).toBe("pending");
    expect(stateOf(letter, replayed(100), [500, 500, 99, 500])).toBe("replaying");
    expect(stateOf(letter, replayed(100), [0, 0, 100, 0])).toBe("written");
  });

  it("ignores a record made for another message with the same sequence (a recreated DLQ stream)", () => {
    expect(stateOf(letter, replayed(100, "2026-01-01T00:00:00.000Z"), [0, 0, 1000, 0])).toBe("pending");
    const discarded: Resolution = {
      action: "discarded",
      at: "2026-11-29T11:00:00.000Z",
      by: "ops",
      dlq_time: letter.time,
      events: 3,
      reason: "test data",
      dead_letter_reason: letter.reason,
      original_subject: letter.originalSubject,
      original_seq: letter.originalSeq,
    };
    expect(stateOf(letter, discarded, [0, 0, 0, 0])).toBe("discarded");
    expect(stateOf(letter, { ...discarded, dlq_time: "2026-01-01T00:00:00.000Z" }, [0, 0, 0, 0])).toBe(
      "pending",
    );
  });

  it("maps only this prefix's events subjects to partitions", () => {
    const names = busNames("tally");
    expect(partitionOfSubject(names, "tally.events.3")).toBe(3);
    expect(partitionOfSubject(names, "tally.dlq.3")).toBeNull();
    expect(partitionOfSubject(names, "other.events.3")).toBeNull();
    expect(partitionOfSubject(names, "tally.events.x")).toBeNull();
  });
});
