import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests share one nats-server and one clickhouse-server; each test
    // file uses its own stream prefix and database, so files may run in parallel.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
