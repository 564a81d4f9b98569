/**
 * Child processes of a benchmark: spawned with captured output (the tail is shown when one
 * fails), stopped with SIGTERM then SIGKILL, and registered for cleanup so that every process
 * a bench started is gone when it ends, also on failure or Ctrl-C.
 */
import { spawn, type ChildProcess } from "node:child_process";

/** A child process with the tail of its stdout+stderr. */
export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Last few KiB of output. */
  output(): string;
  /** Resolves with the exit code (or signal) once the process ended. */
  readonly exited: Promise<string>;
  running(): boolean;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  env: NodeJS.ProcessEnv;
  /** Called with each stdout line (e.g. to find a "listening" line). */
  onLine?: (line: string) => void;
}

export function spawnChild(name: string, command: string, args: string[], opts: SpawnOptions): Child {
  const proc = spawn(command, args, { env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`);
  const pid = proc.pid;
  let tail = "";
  let partial = "";
  const keep = (s: string) => {
    tail = (tail + s).slice(-6000);
  };
  proc.stdout.setEncoding("utf8").on("data", (d: string) => {
    keep(d);
    if (opts.onLine === undefined) return;
    const lines = (partial + d).split("\n");
    partial = lines.pop() ?? "";
    for (const l of lines) opts.onLine(l);
  });
  proc.stderr.setEncoding("utf8").on("data", keep);
  const exited = new Promise<string>((resolve) =>
    proc.once("exit", (code, signal) => resolve(signal ?? String(code))),
  );
  const running = () => proc.exitCode === null && proc.signalCode === null;
  return {
    name,
    proc,
    pid,
    output: () => tail,
    exited,
    running,
    async stop(graceMs = 10_000) {
      if (!running()) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs a child to completion; rejects with its output when it fails or takes too long. */
export async function runToEnd(
  name: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<void> {
  const child = spawnChild(name, command, args, { env });
  const timer = setTimeout(() => child.proc.kill("SIGKILL"), timeoutMs);
  const code = await child.exited;
  clearTimeout(timer);
  if (code !== "0") throw new Error(`${name} exited with ${code}:\n${child.output()}`);
}

/**
 * Cleanup actions run last-registered-first, each bounded in time, at most once; also run on
 * SIGINT/SIGTERM of the bench (then the process exits).
 */
export class Cleanup {
  private readonly actions: { what: string; fn: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: stopping every process this bench started...\n`);
    void this.run().finally(() => process.exit(130));
  };

  constructor() {
    process.once("SIGINT", this.onSignal);
    process.once("SIGTERM", this.onSignal);
  }

  add(what: string, fn: () => Promise<void>): void {
    this.actions.push({ what, fn });
  }

  run(perActionMs = 20_000): Promise<void> {
    this.running ??= (async () => {
      process.off("SIGINT", this.onSignal);
      process.off("SIGTERM", this.onSignal);
      for (const { what, fn } of this.actions.reverse()) {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            process.stderr.write(`cleanup: ${what} took over ${perActionMs} ms; moving on\n`);
            resolve();
          }, perActionMs);
        });
        await Promise.race([
          fn().catch((err: unknown) => process.stderr.write(`cleanup: ${what}: ${String(err)}\n`)),
          timeout,
        ]);
        clearTimeout(timer);
      }
    })();
    return this.running;
  }
}
