import type { JetStreamClient, JetStreamManager, KV, StoredMsg } from "nats";
import { z } from "zod";
import { tally } from "../gen/proto.js";
import type { BusNames } from "./names.js";

/**
 * Dead letters and what became of them.
 *
 * The sink copies a bus message it can never write to the DLQ stream (headers `Tally-Reason`,
 * `Tally-Original-Subject`, `Tally-Original-Seq`) and then acks it on the events stream. Its
 * events got a 2xx and are not in ClickHouse, so until an operator resolves the message it
 * holds the watermark at the oldest receive time of its events (see watermark.ts).
 *
 * Resolutions are recorded in the KV bucket `<prefix>_dead_letters`, key = DLQ sequence:
 * - `replayed`: republished to the events stream at `events_seq`; the message keeps holding the
 *   watermark until the partition's sink consumer has acked past `events_seq` (written), and
 *   only then may it be deleted from the DLQ stream.
 * - `discarded`: an operator gave up on its events (who, when, why); deleted from the DLQ at once.
 * Records are never deleted: they are the audit log `tally dlq list` prints.
 */

/** A dead-lettered bus message, summarised (stored messages never change, so this is cacheable). */
export interface DeadLetter {
  seq: number;
  /** Stored time of the DLQ message (when it was dead-lettered), ISO. */
  time: string;
  reason: string;
  originalSubject: string;
  originalSeq: string;
  /** Events in its BusBatch; null when undecodable. */
  events: number | null;
  /** Oldest `receivedMs` of its events; null when undecodable (receive times unknown). */
  oldestReceivedMs: number | null;
}

const resolutionSchema = z.discriminatedUnion("action", [
  z.object({
    action: z.literal("replayed"),
    at: z.string(),
    by: z.string(),
    /** DLQ message time, guards against a recreated DLQ stream reusing sequence numbers. */
    dlq_time: z.string(),
    events: z.number().nullable(),
    events_subject: z.string(),
    events_partition: z.number().int(),
    events_seq: z.number().int(),
  }),
  z.object({
    action: z.literal("discarded"),
    at: z.string(),
    by: z.string(),
    dlq_time: z.string(),
    events: z.number().nullable(),
    reason: z.string(),
    dead_letter_reason: z.string(),
    original_subject: z.string(),
    original_seq: z.string(),
  }),
]);
export type Resolution = z.infer<typeof resolutionSchema>;

/** Where a DLQ message stands. Only `written` and `discarded` release the watermark. */
export type DeadLetterState = "pending" | "replaying" | "written" | "discarded";

/** Decodes one stored DLQ message. */
export function summarize(m: StoredMsg): DeadLetter {
  let events: number | null = null;
  let oldest: number | null = null;
  try {
    const batch = tally.v1.BusBatch.decode(m.data);
    events = batch.events.length;
    for (const e of batch.events) {
      const r = Number(e.receivedMs ?? 0);
      oldest = oldest === null ? r : Math.min(oldest, r);
    }
  } catch {
    events = null;
    oldest = null;
  }
  return {
    seq: m.seq,
    time: m.time.toISOString(),
    reason: m.header?.get("Tally-Reason") ?? "",
    originalSubject: m.header?.get("Tally-Original-Subject") ?? "",
    originalSeq: m.header?.get("Tally-Original-Seq") ?? "",
    events,
    oldestReceivedMs: oldest,
  };
}

/** The state of a DLQ message given its resolution record and the sink consumers' ack floors. */
export function stateOf(
  d: DeadLetter,
  r: Resolution | undefined,
  ackFloors: readonly number[],
): DeadLetterState {
  if (r === undefined || r.dlq_time !== d.time) return "pending";
  switch (r.action) {
    case "discarded":
      return "discarded";
    case "replayed":
      // NOTE: the ack floor, not "acked at all": a message above the floor may be acked or not;
      // waiting for the floor is conservative and releases as soon as the partition catches up.
      return (ackFloors[r.events_partition] ?? 0) >= r.events_seq ? "written" : "replaying";
  }
}

/**
 * The stream sequence below which the partition's sink consumer has acked everything (its
 * ack floor): every message up to it is written to ClickHouse. 0 if the consumer is missing.
 */
export async function ackFloor(jsm: JetStreamManager, names: BusNames, partition: number): Promise<number> {
  try {
    const ci = await jsm.consumers.info(names.stream, names.consumer(partition));
    return ci.ack_floor.stream_seq;
  } catch (err: unknown) {
    const e = err as { code?: string; api_error?: { err_code?: number } };
    if (e.api_error?.err_code === 10014 || e.code === "404") return 0;
    throw err;
  }
}

/** Partition number of an events subject (`<prefix>.events.<p>`), or null. */
export function partitionOfSubject(names: BusNames, subject: string): number | null {
  const p = Number(subject.slice(subject.lastIndexOf(".") + 1));
  return Number.isInteger(p) && names.subject(p) === subject ? p : null;
}

/** The KV log of resolutions (`<prefix>_dead_letters`). */
export class DeadLetterLog {
  private constructor(private readonly kv: KV) {}

  /** Opens the bucket, creating it if needed (edge, sink tooling and CLI call this). */
  static async open(js: JetStreamClient, names: BusNames, replicas: number): Promise<DeadLetterLog> {
    return new DeadLetterLog(await js.views.kv(names.deadLetterBucket, { history: 5, replicas }));
  }

  /** Binds to an existing bucket; null when it does not exist yet (nothing was ever resolved). */
  static async bind(js: JetStreamClient, names: BusNames): Promise<DeadLetterLog | null> {
    try {
      return new DeadLetterLog(await js.views.kv(names.deadLetterBucket, { bindOnly: true }));
    } catch {
      return null;
    }
  }

  /** Changes whenever a record is written: lets readers re-read only after a change. */
  async revision(): Promise<number> {
    const s = await this.kv.status();
    return s.streamInfo.state.last_seq;
  }

  async record(dlqSeq: number, r: Resolution): Promise<void> {
    await this.kv.put(String(dlqSeq), JSON.stringify(resolutionSchema.parse(r)));
  }

  async get(dlqSeq: number): Promise<Resolution | undefined> {
    const e = await this.kv.get(String(dlqSeq));
    if (e === null || e.operation !== "PUT") return undefined;
    return resolutionSchema.parse(e.json());
  }

  /** Every record, by DLQ sequence. */
  async all(): Promise<Map<number, Resolution>> {
    const out = new Map<number, Resolution>();
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    for (const k of keys) {
      const r = await this.get(Number(k));
      if (r !== undefined) out.set(Number(k), r);
    }
    return out;
  }
}

/** Sequences currently stored in the DLQ stream (first..last minus deleted ones). */
export async function storedDeadLetterSeqs(jsm: JetStreamManager, names: BusNames): Promise<number[]> {
  const info = await jsm.streams.info(names.dlqStream, { deleted_details: true });
  if (info.state.messages === 0) return [];
  const deleted = new Set(info.state.deleted ?? []);
  const out: number[] = [];
  for (let s = info.state.first_seq; s <= info.state.last_seq; s++) if (!deleted.has(s)) out.push(s);
  return out;
}

/** One stored DLQ message with its resolution record and state. */
export interface InspectedDeadLetter {
  letter: DeadLetter;
  resolution: Resolution | undefined;
  state: DeadLetterState;
}

/** Every stored DLQ message with its state (uncached; for the CLI). */
export async function inspectDeadLetters(
  jsm: JetStreamManager,
  names: BusNames,
  log: DeadLetterLog,
  partitions: number,
): Promise<{ stored: InspectedDeadLetter[]; records: Map<number, Resolution> }> {
  const floors = await Promise.all(Array.from({ length: partitions }, (_, p) => ackFloor(jsm, names, p)));
  const seqs = await storedDeadLetterSeqs(jsm, names);
  const records = await log.all();
  const stored: InspectedDeadLetter[] = [];
  for (const seq of seqs) {
    const m = await jsm.streams.getMessage(names.dlqStream, { seq }).catch(() => null);
    if (m === null) continue;
    const letter = summarize(m);
    const resolution = records.get(seq);
    stored.push({ letter, resolution, state: stateOf(letter, resolution, floors) });
  }
  return { stored, records };
}
