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
    [{ DATABASE_URL: "postgresql://me@/db?host=/var/run/postgresql" }, /DATABASE_URL is not a valid URL \(for a Unix socket, name a host and put the socket directory in \?host=/],
    [{ DATABASE_VISITOR: "Robert'); drop" }, /DATABASE_VISITOR must be a lower-case SQL identifier/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL must be one of debug, info, warn, error/],
    [{ API_POOL_SIZE: "1" }, /API_POOL_SIZE must be between 2 and 1000, got 1/],
    [{ WORKER_TASKS: "send_email, bad name" }, /WORKER_TASKS must be a comma-separated list of task identifiers/],
  ])("refuses %o with a message naming the variable", (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it("takes a Unix-socket URL in the form that names a host and puts the directory in ?host=", async () => {
    const url = "postgresql://me@localhost/db?host=/var/run/postgresql";
    expect(loadConfig({ DATABASE_URL: url, AUTHENTICATOR_PASSWORD: "pw" }).databaseUrl).toBe(url);
    const { withCredentials } = await import("../src/db/pool.ts");
    const pg = (await import("pg")).default;
    const client = new pg.Client({ connectionString: withCredentials(url, "auth", "p w") });
    const parsed = (client as unknown as { connectionParameters: Record<string, unknown> }).connectionParameters;
    expect(parsed).toMatchObject({ host: "/var/run/postgresql", user: "auth", password: "p w", database: "db" });
  });

  it("has working defaults with nothing set, and production defaults with NODE_ENV=production", () => {
    const dev = loadConfig({}, "/srv/app");
    expect(dev).toMatchObject({ mode: "development", dataDir: "/srv/app/.data", databaseUrl: null, host: "127.0.0.1", port: 5678, apiPoolSize: 10 });
    expect(dev.log.format).toBe("pretty");
    const prod = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://o@db/app", AUTHENTICATOR_PASSWORD: "pw", APP_URL: "https://app.example.com/" });
    expect(prod).toMatchObject({ mode: "production", host: "0.0.0.0", log: { format: "json" }, accounts: { appUrl: "https://app.example.com" } });
  });
});
