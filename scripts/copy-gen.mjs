// tsc does not copy the generated protobuf JavaScript (allowJs is off so it is not type-checked); do it here.
import { cpSync, mkdirSync } from "node:fs";
mkdirSync("dist/src/gen", { recursive: true });
cpSync("src/gen/proto.js", "dist/src/gen/proto.js");
