/**
 * When the sink stops making progress, what NATS sees: per-partition consumer state and the
 * pull requests the sink sends (a sink that pulls thousands of times a second without getting
 * messages is livelocked, not idle).
 */
import { connect } from "nats";
import { busNames } from "../../src/bus/index.js";

export interface SinkDiagnosis {
  consumers: {
    partition: number;
    pending: number;
    ackPending: number;
    waitingPulls: number;
    redelivered: number;
  }[];
  pullRequestsPerS: number;
  /** One pull request as sent by the sink (JSON), e.g. `{"batch":56,"max_bytes":3537,...}`. */
  samplePulls: string[];
  /** Status replies to those pulls, e.g. `409 Message Size Exceeds MaxBytes`. */
  sampleReplies: string[];
}

export async function diagnoseSink(
  natsUrl: string,
  prefix: string,
  partitions: number,
): Promise<SinkDiagnosis> {
  const nc = await connect({ servers: natsUrl, name: "tally-bench-diagnose" });
  try {
    const names = busNames(prefix);
    const jsm = await nc.jetstreamManager();
    const consumers: SinkDiagnosis["consumers"] = [];
    for (let p = 0; p < partitions; p++) {
      const ci = await jsm.consumers.info(names.stream, names.consumer(p));
      consumers.push({
        partition: p,
        pending: ci.num_pending,
        ackPending: ci.num_ack_pending,
        waitingPulls: ci.num_waiting,
        redelivered: ci.num_redelivered,
      });
    }
    const pulls = nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${names.stream}.>`);
    const replies = nc.subscribe("_INBOX.>");
    const samplePulls: string[] = [];
    const sampleReplies: string[] = [];
    let n = 0;
    const windowMs = 2000;
    setTimeout(() => {
      pulls.unsubscribe();
      replies.unsubscribe();
    }, windowMs);
    await Promise.all([
      (async () => {
        for await (const m of pulls) {
          n++;
          if (samplePulls.length < 4) samplePulls.push(new TextDecoder().decode(m.data));
        }
      })(),
      (async () => {
        for await (const m of replies) {
          if (sampleReplies.length < 4 && m.headers !== undefined && m.headers.code !== 0) {
            sampleReplies.push(`${m.headers.code} ${m.headers.description}`);
          }
        }
      })(),
    ]);
    return { consumers, pullRequestsPerS: Math.round((n * 1000) / windowMs), samplePulls, sampleReplies };
  } finally {
    await nc.close();
  }
}
