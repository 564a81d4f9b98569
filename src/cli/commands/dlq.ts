import { hostname, userInfo } from "node:os";
import type { Command } from "commander";
import type { JetStreamManager } from "nats";
import {
  busNames,
  DeadLetterLog,
  inspectDeadLetters,
  partitionOfSubject,
  summarize,
  type BusNames,
  type InspectedDeadLetter,
} from "../../bus/index.js";
import type { Config } from "../../config/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

/**
 * `tally dlq`: dead letters are bus messages the sink could not write. Their events got a 2xx,
 * so each holds the watermark of every read (bus/dead-letters.ts) until it is either replayed
 * and the replayed copy written, or explicitly discarded (recorded: who, when, why).
 */
export function registerDlqCommand(program: Command): void {
  const dlq = program
    .command("dlq")
    .description("inspect, replay or discard bus messages the sink could not write (dead-letter stream)");

  dlq
    .command("list")
    .description(
      "list dead-lettered messages with their reason and state, and the record of replays and discards",
    )
    .option("--limit <n>", "most messages to list", "100")
    .action(async (opts: { limit: string }) => {
      await withBus(async ({ jsm, names, log, config }) => {
        const removed = await sweep(jsm, names, log, config);
        const { stored, records } = await inspectDeadLetters(jsm, names, log, config.nats.partitions);
        const holding = stored.filter((d) => d.state === "pending" || d.state === "replaying");
        const limit = Number(opts.limit);
        const out = {
          total: stored.length,
          /** Events holding the watermark (undecodable messages hold it too, with events: null). */
          pending_events: holding.reduce((n, d) => n + (d.letter.events ?? 0), 0),
          removed,
          messages: stored.slice(0, limit).map((d) => ({ ...d.letter, state: d.state })),
          resolved: [...records]
            .sort(([a], [b]) => a - b)
            .slice(-limit)
            .map(([seq, r]) => ({ seq, ...r })),
        };
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      });
    });

  dlq
    .command("replay")
    .description(
      "republish dead-lettered messages to the events stream (dedup makes this safe); each leaves the " +
        "DLQ once its replayed copy is written",
    )
    .option("--seq <list>", "replay only these DLQ sequences (comma-separated)")
    .option("--by <who>", "who replays (recorded)", defaultActor())
    .action(async (opts: { seq?: string; by: string }) => {
      await withBus(async ({ jsm, js, names, log, config }) => {
        const { stored } = await inspectDeadLetters(jsm, names, log, config.nats.partitions);
        const wanted = opts.seq === undefined ? null : new Set(parseSeqs(opts.seq));
        const replayed: number[] = [];
        const skipped: { seq: number; why: string }[] = [];
        for (const d of stored) {
          if (wanted !== null && !wanted.has(d.letter.seq)) continue;
          if (d.state !== "pending") {
            skipped.push({ seq: d.letter.seq, why: d.state });
            continue;
          }
          const m = await jsm.streams.getMessage(names.dlqStream, { seq: d.letter.seq });
          const subject = d.letter.originalSubject || m.subject.replace(".dlq.", ".events.");
          const partition = partitionOfSubject(names, subject);
          if (partition === null) {
            skipped.push({ seq: d.letter.seq, why: `not an events subject: ${subject}` });
            continue;
          }
          // Publish, then record; the DLQ message is deleted only once the copy is written
          // (sweep). A crash in between replays twice, which dedup absorbs.
          const ack = await js.publish(subject, m.data, { timeout: 10_000 });
          await log.record(d.letter.seq, {
            action: "replayed",
            at: new Date().toISOString(),
            by: opts.by,
            dlq_time: d.letter.time,
            events: d.letter.events,
            events_subject: subject,
            events_partition: partition,
            events_seq: ack.seq,
          });
          replayed.push(d.letter.seq);
        }
        for (const s of wanted ?? []) {
          if (!stored.some((d) => d.letter.seq === s)) skipped.push({ seq: s, why: "not in the DLQ" });
        }
        process.stdout.write(`${JSON.stringify({ replayed: replayed.length, seqs: replayed, skipped })}\n`);
      });
    });

  dlq
    .command("discard")
    .description(
      "give up on dead-lettered messages: their events will never be counted; recorded with who, when " +
        "and why, then deleted from the DLQ (the watermark stops waiting for them)",
    )
    .requiredOption("--seq <list>", "DLQ sequences to discard (comma-separated)")
    .requiredOption("--reason <text>", "why (recorded)")
    .option("--by <who>", "who discards (recorded)", defaultActor())
    .action(async (opts: { seq: string; reason: string; by: string }) => {
      await withBus(async ({ jsm, names, log }) => {
        const discarded: number[] = [];
        const missing: number[] = [];
        let events = 0;
        for (const seq of parseSeqs(opts.seq)) {
          const m = await jsm.streams.getMessage(names.dlqStream, { seq }).catch(() => null);
          if (m === null) {
            missing.push(seq);
            continue;
          }
          const d = summarize(m);
          // Record first: a crash before the delete leaves a message the watermark already ignores.
          await log.record(seq, {
            action: "discarded",
            at: new Date().toISOString(),
            by: opts.by,
            dlq_time: d.time,
            events: d.events,
            reason: opts.reason,
            dead_letter_reason: d.reason,
            original_subject: d.originalSubject,
            original_seq: d.originalSeq,
          });
          await jsm.streams.deleteMessage(names.dlqStream, seq);
          discarded.push(seq);
          events += d.events ?? 0;
        }
        process.stdout.write(
          `${JSON.stringify({ discarded: discarded.length, seqs: discarded, events, missing })}\n`,
        );
        if (missing.length > 0) process.exitCode = 1;
      });
    });
}

interface Bus {
  config: Config;
  names: BusNames;
  jsm: JetStreamManager;
  js: ReturnType<JetStreamManager["jetstream"]>;
  log: DeadLetterLog;
}

async function withBus(fn: (bus: Bus) => Promise<void>): Promise<void> {
  const config = configOrExit();
  const names = busNames(config.nats.prefix);
  const nc = await connectNats(config, "tally-dlq");
  try {
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    const log = await DeadLetterLog.open(js, names, config.nats.replicas);
    await fn({ config, names, jsm, js, log });
  } finally {
    await nc.drain();
  }
}

/** Deletes DLQ messages that no longer hold the watermark (replayed copy written, or discarded). */
async function sweep(
  jsm: JetStreamManager,
  names: BusNames,
  log: DeadLetterLog,
  config: Config,
): Promise<number> {
  const { stored } = await inspectDeadLetters(jsm, names, log, config.nats.partitions);
  const done = stored.filter((d: InspectedDeadLetter) => d.state === "written" || d.state === "discarded");
  for (const d of done) await jsm.streams.deleteMessage(names.dlqStream, d.letter.seq).catch(() => false);
  return done.length;
}

function parseSeqs(list: string): number[] {
  const seqs = list.split(",").map((s) => Number(s.trim()));
  const bad = seqs.find((n) => !Number.isInteger(n) || n < 1);
  if (bad !== undefined) {
    process.stderr.write(`--seq: ${JSON.stringify(list)} is not a comma-separated list of sequences\n`);
    process.exit(2);
  }
  return seqs;
}

function defaultActor(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `unknown@${hostname()}`;
  }
}
