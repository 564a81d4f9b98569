import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { eventually } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "tally-dev-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Running (a zombie waiting for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

it("the servers `tally dev` started die with it, even when it is killed with SIGKILL", async () => {
  const dev = spawn(process.execPath, ["dist/src/cli/main.js", "dev"], {
    env: { ...process.env, TALLY_DATA_DIR: dir, TALLY_HTTP_PORT: "0", TALLY_LOG_LEVEL: "warn" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  dev.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  await eventually(() => Promise.resolve(stderr.includes("Tally dev stack is up")), 90_000, "dev stack up");
  const pids = ["nats/nats.pid", "clickhouse/clickhouse.pid"].map((f) =>
    Number(readFileSync(join(dir, f), "utf8").trim()),
  );
  expect(pids.every(alive)).toBe(true);

  dev.kill("SIGKILL");
  await eventually(() => Promise.resolve(pids.every((p) => !alive(p))), 30_000, "servers gone");
}, 150_000);
