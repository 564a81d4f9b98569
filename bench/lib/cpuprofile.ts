/**
 * Summarizes V8 `.cpuprofile` files (written by `node --cpu-prof`): self time per function
 * and per area (a package, a Tally source folder, a Node.js internal module, GC), the numbers
 * that say what limits a process.
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileEntry {
  name: string;
  ms: number;
  /** Share of the busy (non-idle) time. */
  pct: number;
}

export interface ProfileSummary {
  busyMs: number;
  idleMs: number;
  functions: ProfileEntry[];
  areas: ProfileEntry[];
}

/** Where a frame's code lives: `hono`, `tally:events`, `node:net`, `(garbage collector)`... */
function area(url: string, fn: string): string {
  if (url === "") return fn.startsWith("(") ? fn : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const own = /\/dist\/(src|bench)\/([^/]+)/.exec(url);
  if (own) return own[1] === "src" ? `tally:${own[2]!.replace(/\.js$/, "")}` : "bench";
  if (url.startsWith("node:"))
    return `node:${
      url
        .slice(5)
        .replace(/^internal\//, "")
        .split("/")[0]
    }`;
  return url;
}

function shortUrl(url: string): string {
  const pkg = /node_modules\/(.*)$/.exec(url);
  if (pkg) return pkg[1]!;
  const own = /\/dist\/(.*)$/.exec(url);
  if (own) return own[1]!;
  return url.replace(/^node:internal\//, "node:");
}

/**
 * A span of the profiled process's run, in microseconds of CLOCK_MONOTONIC: the clock of V8's
 * profile timestamps and of `process.hrtime` in any process on the same machine, so a bench can
 * mark its phases and read the profile of one phase.
 */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
}

/** `process.hrtime` in microseconds, comparable with a `.cpuprofile`'s timestamps. */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export function summarizeProfile(path: string, top = 25, window?: ProfileWindow): ProfileSummary {
  const p = JSON.parse(readFileSync(path, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  // A sample's time is the delta to the next sample; timeDeltas[i] leads up to sample i.
  let t = p.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (window !== undefined && (t < window.fromUs || t >= window.toUs)) continue;
    const next = deltas[i + 1] ?? 0;
    selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + next);
  }
  const fns = new Map<string, number>();
  const areas = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === "(idle)") {
      idle += us;
      continue;
    }
    busy += us;
    const key =
      url === ""
        ? functionName || "(anonymous)"
        : `${functionName || "(anonymous)"} ${shortUrl(url)}:${lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const a = area(url, functionName);
    areas.set(a, (areas.get(a) ?? 0) + us);
  }
  const rank = (m: Map<string, number>): ProfileEntry[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({
        name,
        ms: Math.round(us / 1000),
        pct: busy > 0 ? Math.round((1000 * us) / busy) / 10 : 0,
      }));
  return {
    busyMs: Math.round(busy / 1000),
    idleMs: Math.round(idle / 1000),
    functions: rank(fns),
    areas: rank(areas),
  };
}
