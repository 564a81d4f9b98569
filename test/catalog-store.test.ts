import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busNames } from "../src/bus/index.js";
import { CatalogStore, parseCatalogDocument } from "../src/catalog/index.js";
import type { MeterDefinition } from "../src/catalog/index.js";
import type { Config } from "../src/config/index.js";
import { connectNats } from "../src/runtime/connect.js";
import { childEnv, eventually, testConfig } from "./helpers.js";

let config: Config;
let nc: NatsConnection;
const opened: CatalogStore[] = [];

beforeAll(async () => {
  config = testConfig();
  nc = await connectNats(config, "catalog-store-test");
});
afterAll(async () => {
  for (const s of opened) await s.close();
  await nc?.close();
});

/** A started store on this file's bucket. */
async function openStore(): Promise<CatalogStore> {
  const store = await CatalogStore.open(
    nc.jetstream(),
    busNames(config.nats.prefix).catalogBucket,
    config.nats.replicas,
  );
  opened.push(store);
  await store.start();
  return store;
}

const apiCalls: MeterDefinition = { key: "api_calls", event_type: "api_call", aggregation: "count" };
const T1 = new Date("2026-05-01T10:00:00.000Z");
const T2 = new Date("2026-05-02T10:00:00.000Z");

describe("CatalogStore", () => {
  it("versions a meter: created v1, identical apply unchanged, changed apply v2, history of both", async () => {
    const store = await openStore();
    expect(await store.apply([apiCalls], T1)).toEqual([{ key: "api_calls", outcome: "created", version: 1 }]);
    expect(store.get("api_calls")).toEqual({ ...apiCalls, version: 1, applied_at: T1.toISOString() });

    // Same definition, keys in another order: nothing to do.
    const reordered: MeterDefinition = { aggregation: "count", event_type: "api_call", key: "api_calls" };
    expect(await store.apply([reordered], T2)).toEqual([
      { key: "api_calls", outcome: "unchanged", version: 1 },
    ]);

    const changed: MeterDefinition = { ...apiCalls, filters: [{ property: "status", not_equals: "failed" }] };
    expect(await store.apply([changed], T2)).toEqual([{ key: "api_calls", outcome: "updated", version: 2 }]);
    expect(store.get("api_calls")).toEqual({ ...changed, version: 2, applied_at: T2.toISOString() });

    expect(await store.history("api_calls")).toEqual([
      { ...apiCalls, version: 1, applied_at: T1.toISOString() },
      { ...changed, version: 2, applied_at: T2.toISOString() },
    ]);
    expect(await store.history("never_applied")).toEqual([]);
  });

  it("keeps meters not mentioned and lists every current meter", async () => {
    const store = await openStore();
    const a: MeterDefinition = { key: "keep_a", event_type: "a", aggregation: "count" };
    const b: MeterDefinition = { key: "keep_b", event_type: "b", aggregation: "sum", value_property: "n" };
    await store.apply([a, b], T1);
    expect(await store.apply([{ ...b, value_property: "m" }], T2)).toEqual([
      { key: "keep_b", outcome: "updated", version: 2 },
    ]);
    expect(store.get("keep_a")?.version).toBe(1);
    expect(store.list().map((m) => m.key)).toEqual(expect.arrayContaining(["keep_a", "keep_b"]));
    // History of keep_b does not pick up versions of a key that merely shares its prefix.
    await store.apply([{ ...b, key: "keep_b_x" }], T1);
    expect((await store.history("keep_b")).map((m) => m.version)).toEqual([1, 2]);
  });

  it("loses no version when two appliers change the same meter at once", async () => {
    const store = await openStore();
    const other = await openStore();
    const key = "racy";
    await store.apply([{ key, event_type: "e", aggregation: "count" }], T1);
    await eventually(
      async () => Promise.resolve(other.get(key)?.version === 1),
      10_000,
      "second store sees v1",
    );

    const x: MeterDefinition = { key, event_type: "e", aggregation: "sum", value_property: "x" };
    const y: MeterDefinition = { key, event_type: "e", aggregation: "sum", value_property: "y" };
    const [rx, ry] = await Promise.all([store.apply([x], T2), other.apply([y], T2)]);
    expect([rx[0]!.version, ry[0]!.version].sort()).toEqual([2, 3]);
    expect(rx[0]!.outcome).toBe("updated");
    expect(ry[0]!.outcome).toBe("updated");

    const history = await store.history(key);
    expect(history.map((m) => m.version)).toEqual([1, 2, 3]);
    const props = history.slice(1).map((m) => m.value_property);
    expect(props.sort()).toEqual(["x", "y"]);
    // The current meter is the last version written.
    const last = history[2]!;
    await eventually(async () => Promise.resolve(store.get(key)?.version === 3), 10_000, "store sees v3");
    expect(store.get(key)?.value_property).toBe(last.value_property);
    await eventually(async () => Promise.resolve(other.get(key)?.version === 3), 10_000, "other sees v3");
  });

  it("lets a second instance watching the bucket see changes applied elsewhere", async () => {
    const writer = await openStore();
    const reader = await openStore();
    const m: MeterDefinition = { key: "watched", event_type: "w", aggregation: "count" };
    await writer.apply([m], T1);
    await eventually(
      async () => Promise.resolve(reader.get("watched")?.version === 1),
      10_000,
      "reader sees v1",
    );
    await writer.apply([{ ...m, name: "Watched" }], T2);
    await eventually(
      async () => Promise.resolve(reader.get("watched")?.version === 2),
      10_000,
      "reader sees v2",
    );
    expect(reader.get("watched")).toEqual({
      ...m,
      name: "Watched",
      version: 2,
      applied_at: T2.toISOString(),
    });

    // A store started later loads the current meters before start() returns.
    const late = await openStore();
    expect(late.get("watched")?.version).toBe(2);
  });

  it("a version record left before its pointer (a crash under the old write order) does not block the meter", async () => {
    const store = await openStore();
    const key = "orphaned";
    await store.apply([{ key, event_type: "e", aggregation: "count" }], T1);
    // The state a crash between the two writes of the old order left: v2 recorded, never current.
    const kv = await nc.jetstream().views.kv(busNames(config.nats.prefix).catalogBucket);
    await kv.create(
      `meter_versions.${key}.2`,
      JSON.stringify({
        key,
        event_type: "e",
        aggregation: "count",
        name: "lost",
        version: 2,
        applied_at: T1.toISOString(),
      }),
    );

    const changed: MeterDefinition = { key, event_type: "e", aggregation: "sum", value_property: "n" };
    expect(await store.apply([changed], T2)).toEqual([{ key, outcome: "updated", version: 2 }]);
    const history = await store.history(key);
    expect(history.map((m) => [m.version, m.value_property ?? null])).toEqual([
      [1, null],
      [2, "n"],
    ]);
  });

  it("SIGKILL of `tally catalog apply` right after it claimed a version: the version is current, listed, and the next apply works", async () => {
    const store = await openStore();
    const key = "killed";
    const v1: MeterDefinition = { key, event_type: "e", aggregation: "count" };
    await store.apply([v1], T1);

    const dir = mkdtempSync(join(tmpdir(), "tally-catalog-"));
    const file = join(dir, "catalog.yaml");
    writeFileSync(
      file,
      `meters:\n  - key: ${key}\n    event_type: e\n    aggregation: sum\n    value_property: a\n`,
    );
    const child = spawn(process.execPath, ["dist/src/cli/main.js", "catalog", "apply", file], {
      env: { ...childEnv(config), TALLY_FAULT_CRASH_AFTER_CATALOG_CLAIM: "true" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    const signal = await new Promise((r) => child.once("exit", (code, sig) => r(sig ?? code)));
    expect(signal).toBe("SIGKILL");

    // The claim (the pointer) landed; its history record did not, yet history lists it.
    await eventually(async () => Promise.resolve(store.get(key)?.version === 2), 10_000, "store sees v2");
    expect(store.get(key)?.value_property).toBe("a");
    expect((await store.history(key)).map((m) => m.version)).toEqual([1, 2]);

    // The next apply restores the missing record and claims v3.
    const v3: MeterDefinition = { key, event_type: "e", aggregation: "sum", value_property: "b" };
    expect(await store.apply([v3], T2)).toEqual([{ key, outcome: "updated", version: 3 }]);
    const kv = await nc.jetstream().views.kv(busNames(config.nats.prefix).catalogBucket);
    expect((await kv.get(`meter_versions.${key}.2`))?.json()).toMatchObject({
      version: 2,
      value_property: "a",
    });
    expect((await store.history(key)).map((m) => m.value_property ?? null)).toEqual([null, "a", "b"]);
  });
});

describe("CatalogStore: the whole catalog", () => {
  const doc = `${readFileSync("examples/plan.yaml", "utf8")}
customers:
  - { key: acme, currency: usd, timezone: Europe/Berlin, external_ids: { stripe_customer_id: cus_A1 } }
  - { key: "ops@globex.example / team 7 — Zürich", currency: usd }
subscriptions:
  - { key: acme-growth, customer: acme, plan: growth, started_at: 2026-03-01T00:00:00Z, seats: { quantity: 12 } }
  - { key: globex-growth, customer: "ops@globex.example / team 7 — Zürich", plan: growth, started_at: 2026-05-10T00:00:00Z, seats: { meter: peak_seats } }
`;

  it("applies every section, versioned; an identical re-apply changes nothing; another process reads it all", async () => {
    const store = await openStore();
    const first = await store.applyDocument(parseCatalogDocument(doc, store.lookup()), T1);
    expect(first.meters).toHaveLength(6);
    expect(first.plans).toEqual([{ key: "growth", outcome: "created", version: 1 }]);
    expect(first.customers.map((r) => r.outcome)).toEqual(["created", "created"]);
    expect(first.subscriptions.map((r) => r.version)).toEqual([1, 1]);

    // Stored plans and customers re-validate to themselves: applying the same file again is a no-op.
    const again = await store.applyDocument(parseCatalogDocument(doc, store.lookup()), T2);
    for (const section of Object.values(again)) {
      expect(section.every((r: { outcome: string }) => r.outcome === "unchanged")).toBe(true);
    }

    const changed = doc.replace("seats: { quantity: 12 }", "seats: { quantity: 15 }");
    const third = await store.applyDocument(parseCatalogDocument(changed, store.lookup()), T2);
    expect(third.subscriptions).toEqual([
      { key: "acme-growth", outcome: "updated", version: 2 },
      { key: "globex-growth", outcome: "unchanged", version: 1 },
    ]);

    const other = await openStore();
    expect(other.customers.get("ops@globex.example / team 7 — Zürich")?.version).toBe(1);
    expect(other.plans.get("growth")?.prices).toHaveLength(6);
    expect((await other.subscriptions.history("acme-growth")).map((s) => s.seats?.quantity)).toEqual([
      "12",
      "15",
    ]);
    expect((await other.subscriptions.version("acme-growth", 1))?.seats?.quantity).toBe("12");
  });

  it("a document with a bad reference stores nothing", async () => {
    const store = await openStore();
    const bad = `
customers:
  - { key: fresh, currency: usd }
subscriptions:
  - { key: fresh-sub, customer: fresh, plan: nope, started_at: 2026-05-10T00:00:00Z }
`;
    expect(() => parseCatalogDocument(bad, store.lookup())).toThrow(
      /subscriptions\[0\]\.plan: no plan "nope"/,
    );
    expect(store.customers.get("fresh")).toBeUndefined();
    expect(store.subscriptions.get("fresh-sub")).toBeUndefined();
  });
});
