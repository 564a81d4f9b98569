import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { startClickHouse, startNats, type ServerProcess } from "../src/dev/servers.js";

declare module "vitest" {
  export interface ProvidedContext {
    natsUrl: string;
    clickhouseUrl: string;
  }
}

let servers: ServerProcess[] = [];
let dir = "";

/** One real nats-server and one real clickhouse-server for the whole run, on free loopback ports. */
export async function setup(project: TestProject): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), "tally-test-"));
  servers = await Promise.all([startNats({ dataDir: dir }), startClickHouse({ dataDir: dir })]);
  project.provide("natsUrl", servers[0]!.url);
  project.provide("clickhouseUrl", servers[1]!.url);
}

export async function teardown(): Promise<void> {
  await Promise.all(servers.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
}
