import type { Command } from "commander";
import { tally } from "../../gen/proto.js";
import { busNames } from "../../bus/index.js";
import { connectNats } from "../../runtime/connect.js";
import { configOrExit } from "../config.js";

/** One dead-lettered bus message, as `tally dlq list` prints it. */
interface DlqEntry {
  seq: number;
  time: string;
  reason: string;
  originalSubject: string;
  originalSeq: string;
  events: number | null;
}

export function registerDlqCommand(program: Command): void {
  const dlq = program
    .command("dlq")
    .description("inspect and replay bus messages the sink could not write (dead-letter stream)");

  dlq
    .command("list")
    .description("list dead-lettered messages with their reason")
    .option("--limit <n>", "most messages to list", "100")
    .action(async (opts: { limit: string }) => {
      const config = configOrExit();
      const names = busNames(config.nats.prefix);
      const nc = await connectNats(config, "tally-dlq");
      try {
        const jsm = await nc.jetstreamManager();
        const info = await jsm.streams.info(names.dlqStream);
        const out: DlqEntry[] = [];
        for (
          let seq = info.state.first_seq;
          seq <= info.state.last_seq && out.length < Number(opts.limit);
          seq++
        ) {
          const m = await jsm.streams.getMessage(names.dlqStream, { seq }).catch(() => null);
          if (m === null) continue;
          let events: number | null = null;
          try {
            events = tally.v1.BusBatch.decode(m.data).events.length;
          } catch {
            events = null;
          }
          out.push({
            seq,
            time: m.time.toISOString(),
            reason: m.header?.get("Tally-Reason") ?? "",
            originalSubject: m.header?.get("Tally-Original-Subject") ?? "",
            originalSeq: m.header?.get("Tally-Original-Seq") ?? "",
            events,
          });
        }
        process.stdout.write(`${JSON.stringify({ total: info.state.messages, messages: out }, null, 2)}\n`);
      } finally {
        await nc.drain();
      }
    });

  dlq
    .command("replay")
    .description(
      "republish dead-lettered messages to the events stream (dedup makes this safe), then delete them",
    )
    .option("--seq <n>", "replay only this DLQ sequence")
    .action(async (opts: { seq?: string }) => {
      const config = configOrExit();
      const names = busNames(config.nats.prefix);
      const nc = await connectNats(config, "tally-dlq");
      try {
        const jsm = await nc.jetstreamManager();
        const js = nc.jetstream();
        const info = await jsm.streams.info(names.dlqStream);
        const seqs =
          opts.seq !== undefined
            ? [Number(opts.seq)]
            : Array.from(
                { length: Math.max(0, info.state.last_seq - info.state.first_seq + 1) },
                (_, i) => info.state.first_seq + i,
              );
        let replayed = 0;
        for (const seq of seqs) {
          const m = await jsm.streams.getMessage(names.dlqStream, { seq }).catch(() => null);
          if (m === null) continue;
          const subject = m.header?.get("Tally-Original-Subject") || m.subject.replace(".dlq.", ".events.");
          // Publish first, delete second: a crash in between replays twice, which dedup absorbs.
          await js.publish(subject, m.data, { timeout: 10_000 });
          await jsm.streams.deleteMessage(names.dlqStream, seq);
          replayed++;
        }
        process.stdout.write(`${JSON.stringify({ replayed })}\n`);
      } finally {
        await nc.drain();
      }
    });
}
