// Decides which PostgreSQL this process talks to: DATABASE_URL when set, otherwise the embedded
// server under DATA_DIR (started here, with a database and an authenticator password of its own).
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { startEmbedded, type EmbeddedServer } from "./embedded.ts";
import { withCredentials } from "./pool.ts";

export const EMBEDDED_DATABASE = "hourglass";

export interface Database {
  ownerUrl: string;
  authUrl: string;
  authenticatorPassword: string | null;
  /** The embedded server owns its roles, so their password is (re)set at start. */
  resetPassword: boolean;
  embedded: EmbeddedServer | null;
}

function localSecret(file: string): string {
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const secret = randomBytes(24).toString("base64url");
  writeFileSync(file, secret + "\n", { mode: 0o600 });
  return secret;
}

export async function createDatabaseIfMissing(serverUrl: string, name: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: serverUrl });
  client.on("error", () => {});
  await client.connect();
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [name]);
    if (rowCount) return false;
    try {
      await client.query(`create database ${client.escapeIdentifier(name)}`);
    } catch (err) {
      if ((err as { code?: string }).code !== "42P04") throw err; // created concurrently
    }
    return true;
  } finally {
    await client.end();
  }
}

/** A connection string with its password hidden, for logs. */
export function safeUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.toString();
}

export async function resolveDatabase(config: Config, log: Logger): Promise<Database> {
  if (config.databaseUrl) {
    const authUrl =
      config.authDatabaseUrl ??
      withCredentials(config.databaseUrl, config.roles.authenticator, config.authenticatorPassword!);
    return {
      ownerUrl: config.databaseUrl,
      authUrl,
      authenticatorPassword: config.authenticatorPassword,
      resetPassword: false,
      embedded: null,
    };
  }
  mkdirSync(config.dataDir, { recursive: true });
  const embedded = await startEmbedded({
    dir: path.join(config.dataDir, "postgres"),
    port: config.embeddedPgPort,
    log: log.child({ component: "embedded-postgres" }),
  });
  try {
    if (await createDatabaseIfMissing(embedded.url("postgres"), EMBEDDED_DATABASE)) {
      log.info("created database", { database: EMBEDDED_DATABASE });
    }
    const password = config.authenticatorPassword ?? localSecret(path.join(config.dataDir, "authenticator.password"));
    const ownerUrl = embedded.url(EMBEDDED_DATABASE);
    return {
      ownerUrl,
      authUrl: withCredentials(ownerUrl, config.roles.authenticator, password),
      authenticatorPassword: password,
      resetPassword: true,
      embedded,
    };
  } catch (err) {
    await embedded.stop();
    throw err;
  }
}
