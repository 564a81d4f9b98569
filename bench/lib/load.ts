/**
 * Load generation for the ingest bench: autocannon (closed loop: each connection sends its next
 * request when the previous answered) with a body built per request, so every event id is new
 * (the dedup would otherwise hide the work) and every timestamp is current.
 */
import autocannon, { type Result } from "autocannon";

/** Builds unique event bodies: ids `<run>-<phase>-<request seq>-<index>`. */
export class Bodies {
  private seq = 0;

  constructor(
    private readonly prefix: string,
    private readonly customers = 1000,
  ) {}

  /** One event object as JSON text (about 170 bytes). */
  private event(id: string, n: number, time: string): string {
    return (
      `{"id":"${id}","type":"api_call","customer":"cust-${n % this.customers}","time":"${time}",` +
      `"properties":{"region":"eu-west-1","model":"small-2","tokens":${n % 4096},"cached":${n % 3 === 0}}}`
    );
  }

  /** A single event (a JSON object) or a batch (a JSON array of `size` events). */
  next(size: number): string {
    const s = this.seq++;
    const time = new Date().toISOString();
    if (size === 1) return this.event(`${this.prefix}-${s}`, s, time);
    let body = "[";
    for (let i = 0; i < size; i++) {
      if (i > 0) body += ",";
      body += this.event(`${this.prefix}-${s}-${i}`, s + i, time);
    }
    return `${body}]`;
  }
}

/** What one load phase measured. */
export interface LoadResult {
  label: string;
  connections: number;
  durationS: number;
  eventsPerRequest: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  reqPerS: number;
  eventsPerS: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface LoadOptions {
  label: string;
  url: string;
  headers: Record<string, string>;
  connections: number;
  durationS: number;
  eventsPerRequest: number;
  bodies: Bodies;
  /** Paced load in requests/s (all connections together); saturating when absent. */
  overallRate?: number;
}

/** Running autocannon instances, so a failing bench can stop them. */
const active = new Set<{ stop(): void }>();

export function stopAllLoad(): void {
  for (const a of active) a.stop();
}

export async function load(o: LoadOptions): Promise<LoadResult> {
  const result = await new Promise<Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationS,
        timeout: 10,
        ...(o.overallRate !== undefined ? { overallRate: o.overallRate } : {}),
        requests: [
          {
            method: "POST",
            path: "/v1/events",
            headers: o.headers,
            setupRequest: (req) => {
              req.body = o.bodies.next(o.eventsPerRequest);
              return req;
            },
          },
        ],
      },
      (err, res) => {
        active.delete(instance);
        if (err) reject(err);
        else resolve(res);
      },
    );
    active.add(instance);
  });
  const ok = result["2xx"];
  const statusCodes: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(result.statusCodeStats)) statusCodes[code] = count;
  return {
    label: o.label,
    connections: o.connections,
    durationS: result.duration,
    eventsPerRequest: o.eventsPerRequest,
    ok,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    reqPerS: ok / result.duration,
    eventsPerS: (ok * o.eventsPerRequest) / result.duration,
    p50Ms: result.latency.p50,
    p90Ms: result.latency.p90,
    p99Ms: result.latency.p99,
    maxMs: result.latency.max,
  };
}
