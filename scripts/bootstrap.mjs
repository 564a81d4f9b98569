// Installs what `npm run dev`, `npm test` and `npm run bench` need on a fresh Debian machine with
// only Node.js: npm packages (when node_modules is missing or older than package-lock.json) and
// nats-server, clickhouse-server and chromium from Debian (when not on PATH). Idempotent and quiet when done.
import { execSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";

function run(cmd) {
  process.stderr.write(`bootstrap: ${cmd}\n`);
  execSync(cmd, { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
}
function has(bin) {
  try {
    execSync(`command -v ${bin}`, { stdio: "ignore", shell: "/bin/sh" });
    return true;
  } catch {
    return false;
  }
}

const lock = "package-lock.json";
const marker = "node_modules/.package-lock.json";
if (!existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs + 1000)) {
  // The lock file lists chdb's platform builds (darwin, linux-arm64) that the registry mirror here
  // does not serve; npm ci skips them on this platform, so it installs exactly the locked tree.
  run("npm ci --no-audit --no-fund");
}

// chromium: the customer usage page's browser test drives Debian's Chromium through playwright-core.
const missing = [
  ["nats-server", "nats-server"],
  ["clickhouse-server", "clickhouse-server"],
  ["chromium", "chromium"],
].filter(([bin]) => !has(bin));
if (missing.length > 0) {
  const sudo = process.getuid && process.getuid() !== 0 ? "sudo " : "";
  run(`${sudo}apt-get update -qq`);
  run(`${sudo}apt-get install -y -qq ${missing.map(([, pkg]) => pkg).join(" ")}`);
}
