export { loadConfig, toConfig, envSchema, ConfigError } from "./env.js";
export type { Config, Env } from "./env.js";
