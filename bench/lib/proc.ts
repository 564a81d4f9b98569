/**
 * Per-process resource readings from /proc (Linux): resident memory and CPU time, so the
 * ingest bench can say where the machine's cores went in each phase.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat times (almost always 100). */
const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * `pid` and its child processes (an edge with `--workers N` is a primary and N workers), found
 * by their parent pid in /proc.
 */
export function processTree(pid: number): number[] {
  const out = [pid];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const e of entries) {
    const child = Number(e);
    if (!Number.isInteger(child) || child === pid) continue;
    try {
      const stat = readFileSync(`/proc/${child}/stat`, "utf8");
      // Fields after "(comm)": state is index 0, ppid 1.
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) out.push(child);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * VmRSS and VmHWM (peak RSS) of a process and its children, summed, in MiB (the sum of the
 * peaks is an upper bound of the peak of the sum), or null once it is gone.
 */
export function memoryMiB(pid: number): { rss: number; hwm: number } | null {
  const own = memoryOf(pid);
  if (own === null) return null;
  for (const child of processTree(pid).slice(1)) {
    const m = memoryOf(child);
    if (m !== null) {
      own.rss += m.rss;
      own.hwm += m.hwm;
    }
  }
  return own;
}

function memoryOf(pid: number): { rss: number; hwm: number } | null {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return null;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
  return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
}

/** User + system CPU seconds a process and its children used so far, or null once it is gone. */
export function cpuSeconds(pid: number): number | null {
  const own = cpuOf(pid);
  if (own === null) return null;
  let sum = own;
  for (const child of processTree(pid).slice(1)) sum += cpuOf(child) ?? 0;
  return sum;
}

function cpuOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)": state is index 0, utime 11, stime 12.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return null;
  }
}

/** Samples a process's RSS every `intervalMs` and keeps the peak. */
export class RssSampler {
  private timer: NodeJS.Timeout | null = null;
  peakMiB = 0;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 100,
  ) {}

  /** The process and its children, listed once (a scan of /proc every 100 ms would cost CPU). */
  private pids: number[] = [];

  start(): this {
    this.pids = processTree(this.pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  stop(): number {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.sample();
    return this.peakMiB;
  }

  private sample(): void {
    let rss = 0;
    for (const pid of this.pids) rss += memoryOf(pid)?.rss ?? 0;
    if (rss > this.peakMiB) this.peakMiB = rss;
  }
}

/** CPU seconds used by the whole machine so far (all cores, busy = not idle and not iowait). */
export function machineCpuSeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const busy = v.slice(0, 8).reduce((s, n, i) => (i === 3 || i === 4 ? s : s + n), 0);
  return busy / clockTicks;
}

/** Cores the machine kept busy over `ms` (everything, not only this bench). */
export async function machineCoresBusy(ms: number): Promise<number> {
  const a = machineCpuSeconds();
  const t = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return round((machineCpuSeconds() - a) / ((performance.now() - t) / 1000), 2);
}

const machine = "(machine)";

/**
 * CPU seconds of several named processes (and this one) between two points in time, plus
 * "other": what the rest of the machine used meanwhile (other users' work skews the numbers).
 */
export class CpuMeter {
  private start = new Map<string, number>();
  private startWall = 0;

  constructor(private readonly pids: () => Record<string, number | undefined>) {}

  begin(): void {
    this.start = this.read();
    this.startWall = performance.now();
  }

  /** Cores used per process since {@link begin} (1.0 = one core fully busy). */
  end(): Record<string, number> {
    const wallS = (performance.now() - this.startWall) / 1000;
    const now = this.read();
    const out: Record<string, number> = {};
    let mine = 0;
    for (const [name, v] of now) {
      const before = this.start.get(name);
      if (name === machine || before === undefined || wallS <= 0) continue;
      mine += v - before;
      out[name] = round((v - before) / wallS, 2);
    }
    const m0 = this.start.get(machine);
    const m1 = now.get(machine);
    if (m0 !== undefined && m1 !== undefined && wallS > 0) {
      out.other = round(Math.max(0, m1 - m0 - mine) / wallS, 2);
    }
    return out;
  }

  private read(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [name, pid] of Object.entries(this.pids())) {
      if (pid === undefined) continue;
      const s = cpuSeconds(pid);
      if (s !== null) out.set(name, s);
    }
    const self = process.cpuUsage();
    out.set("bench+autocannon", (self.user + self.system) / 1e6);
    out.set(machine, machineCpuSeconds());
    return out;
  }
}

export function round(n: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
