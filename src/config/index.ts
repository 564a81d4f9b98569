export { loadConfig, toConfig, envSchema, ConfigError, parseDuration } from "./env.js";
export type { Config, Env, StripeConfig, WebhookConfig, XeroConfig } from "./env.js";
