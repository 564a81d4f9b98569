import { ConfigError, loadConfig, type Config } from "../config/index.js";

/** Parses the environment once; exits with every bad variable listed. */
export function configOrExit(overrides: Record<string, string> = {}): Config {
  try {
    return loadConfig({ ...process.env, ...overrides });
  } catch (err: unknown) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}
