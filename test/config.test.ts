import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.ts";

describe("configuration", () => {
  it.each([
    [{ PORT: "abc" }, /PORT must be a whole number, got "abc"/],
    [{ PORT: "70000" }, /PORT must be between 0 and 65535, got 70000/],
    [{ DATABASE_URL: "mysql://x/y" }, /DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/],
    [{ DATABASE_URL: "postgres://x/y" }, /AUTHENTICATOR_PASSWORD \(or AUTH_DATABASE_URL\) is required/],
    [{ SMTP_URL: "http://mail" }, /SMTP_URL must be a smtp:\/\/ or smtps:\/\/ URL/],
    [{ APP_URL: "not a url" }, /APP_URL is not a valid URL/],
    [{ DATABASE_VISITOR: "Robert'); drop" }, /DATABASE_VISITOR must be a lower-case SQL identifier/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL must be one of debug, info, warn, error/],
    [{ WORKER_TASKS: "send_email, bad name" }, /WORKER_TASKS must be a comma-separated list of task identifiers/],
  ])("refuses %o with a message naming the variable", (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it("has working defaults with nothing set, and production defaults with NODE_ENV=production", () => {
    const dev = loadConfig({}, "/srv/app");
    expect(dev).toMatchObject({ mode: "development", dataDir: "/srv/app/.data", databaseUrl: null, host: "127.0.0.1", port: 5678 });
    expect(dev.log.format).toBe("pretty");
    const prod = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://o@db/app", AUTHENTICATOR_PASSWORD: "pw", APP_URL: "https://app.example.com/" });
    expect(prod).toMatchObject({ mode: "production", host: "0.0.0.0", log: { format: "json" }, accounts: { appUrl: "https://app.example.com" } });
  });
});
