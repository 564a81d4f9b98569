import { summarizeProfile } from "./dist/bench/lib/cpuprofile.js";
import { readdirSync } from "node:fs";
const f = readdirSync("/tmp/prof")[0];
const s = summarizeProfile("/tmp/prof/" + f, 25);
console.log("busy", s.busyMs, "idle", s.idleMs);
for (const x of s.functions) console.log(x.ms, x.pct, x.name);
console.log("--");
for (const x of s.areas.slice(0, 12)) console.log(x.ms, x.pct, x.name);
