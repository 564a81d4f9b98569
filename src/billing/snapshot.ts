// Placeholder replaced once the usage path takes a received-at cutoff (see close.ts Snapshotter).
import type { Snapshotter } from "./close.js";
import type { UsageDeps } from "../usage/index.js";

export function usageSnapshotter(_deps: UsageDeps): Snapshotter {
  throw new Error("not implemented yet");
}
