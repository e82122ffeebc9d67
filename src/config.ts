// The one place that reads the environment. Everything else receives a Config.
// Every variable is documented in README.md ("Configuration"); a bad value fails
// start-up with a message that names the variable.
import ipaddr from "ipaddr.js";
import path from "node:path";

export type Env = Record<string, string | undefined>;
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Config {
  mode: "development" | "production";
  dataDir: string;
  /** Owner connection (migrations, worker). null: run the embedded server. */
  databaseUrl: string | null;
  /** Login for the API's requests; null: derived from databaseUrl + role + password. */
  authDatabaseUrl: string | null;
  roles: { authenticator: string; visitor: string };
  authenticatorPassword: string | null;
  embeddedPgPort: number;
  host: string;
  port: number;
  statementTimeoutMs: number;
  /** Connections the API process opens at most for requests (and one of them for jobEvents' LISTEN while anyone subscribes). */
  apiPoolSize: number;
  /** When set, GET /metrics requires `Authorization: Bearer <token>`. */
  metricsToken: string | null;
  worker: {
    concurrency: number;
    localQueueSize: number;
    pollIntervalMs: number;
    /** Wake at each future job's run_at instead of finding it at the next poll (src/worker/wake.ts). */
    exactWake: boolean;
    /** A worker silent (no heartbeat) this long is dead: its jobs are released (src/worker/heartbeat.ts). */
    deadAfterMs: number;
    /** Only these task identifiers; null: every task in tasks/. */
    tasks: string[] | null;
    shutdownTimeoutMs: number;
  };
  history: { retentionDays: number; flushDelayMs: number };
  accounts: {
    /** Base URL of the web app; login links point to <appUrl>/login?token=... */
    appUrl: string;
    sessionLifetimeDays: number;
    /** How long an API process remembers a token's session (ended sessions are forgotten at once); 0: look it up on every request. */
    sessionCacheMs: number;
    /** Read notifications older than this are deleted. */
    notificationRetentionDays: number;
  };
  email: {
    /** smtp:// or smtps:// URL; null writes each message as an .eml file under DATA_DIR/mail. */
    smtpUrl: string | null;
    from: string;
    /** Connection, greeting and socket timeouts for SMTP, in milliseconds. */
    timeoutMs: number;
  };
  uploads: {
    /** Where POST /uploads stores files: DATA_DIR/uploads (the worker deletes them from there). */
    dir: string;
    ttlHours: number;
    maxBytes: number;
    /** file.expiring is emitted this long before a file expires. */
    expiringWindowHours: number;
  };
  webhooks: {
    /** CIDR ranges delivery may connect to even though they are private or loopback (development, tests). */
    allowedNetworks: string[];
    /** Whole request, connect to last byte read. */
    timeoutMs: number;
    /** Delivered and failed events older than this are deleted. */
    outboxRetentionHours: number;
  };
  log: { level: LogLevel; format: "pretty" | "json" };
  /** Set by the graphile-migrate CLI for its hooks (src/db/prepare.ts). */
  gmDatabaseUrl: string | null;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

// Grafast reads GRAPHILE_ENV when it is first imported; main.ts imports this module first.
process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === "production" ? "production" : "development";

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^-?\d+$/.test(raw.trim())) {
    throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  }
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

/** A URL with one of the given schemes, or null when unset. */
function url(env: Env, name: string, schemes: readonly string[]): string | null {
  const raw = env[name];
  if (raw === undefined || raw === "") return null;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    // libpq accepts an empty host before the path (postgresql://user@/db?host=/run/postgresql);
    // WHATWG URLs, which the rest of Hourglass uses, do not: say which form works.
    const socketHint = /^postgres(ql)?:\/\/[^/]*@\//.test(raw)
      ? " (for a Unix socket, name a host and put the socket directory in ?host=, e.g. postgresql://user@localhost/db?host=/var/run/postgresql)"
      : "";
    throw new ConfigError(`${name} is not a valid URL${socketHint}`);
  }
  if (!schemes.includes(parsed.protocol.slice(0, -1))) {
    throw new ConfigError(`${name} must be a ${schemes.map((s) => `${s}://`).join(" or ")} URL, got protocol ${parsed.protocol}`);
  }
  return raw;
}

const postgresUrl = (env: Env, name: string) => url(env, name, ["postgres", "postgresql"]);
const smtpUrl = (env: Env, name: string) => url(env, name, ["smtp", "smtps"]);
const httpUrl = (env: Env, name: string, fallback: string) =>
  (url(env, name, ["http", "https"]) ?? fallback).replace(/\/+$/, "");

function roleName(env: Env, name: string, fallback: string): string {
  const value = env[name] || fallback;
  if (!ROLE_NAME.test(value)) {
    throw new ConfigError(`${name} must be a lower-case SQL identifier (a-z, 0-9, _), got ${JSON.stringify(value)}`);
  }
  return value;
}

function list(env: Env, name: string): string[] | null {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return null;
  const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    if (!/^[a-z0-9_]+$/i.test(item)) {
      throw new ConfigError(`${name} must be a comma-separated list of task identifiers, got ${JSON.stringify(item)}`);
    }
  }
  return items;
}

function cidrs(env: Env, name: string): string[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return [];
  const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    try {
      ipaddr.parseCIDR(item);
    } catch {
      throw new ConfigError(`${name} must be a comma-separated list of CIDR ranges (e.g. 127.0.0.0/8,::1/128), got ${JSON.stringify(item)}`);
    }
  }
  return items;
}

export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const mode = oneOf(env, "NODE_ENV", ["development", "production", "test"], "development");
  const production = mode === "production";
  const databaseUrl = postgresUrl(env, "DATABASE_URL");
  const authDatabaseUrl = postgresUrl(env, "AUTH_DATABASE_URL");
  const authenticatorPassword = env.AUTHENTICATOR_PASSWORD || null;
  if (databaseUrl && !authDatabaseUrl && !authenticatorPassword) {
    throw new ConfigError(
      "AUTHENTICATOR_PASSWORD (or AUTH_DATABASE_URL) is required when DATABASE_URL is set: the API logs in as the authenticator role",
    );
  }
  return {
    mode: production ? "production" : "development",
    dataDir: path.resolve(cwd, env.DATA_DIR || ".data"),
    databaseUrl,
    authDatabaseUrl,
    roles: {
      authenticator: roleName(env, "DATABASE_AUTHENTICATOR", "hourglass_authenticator"),
      visitor: roleName(env, "DATABASE_VISITOR", "hourglass_visitor"),
    },
    authenticatorPassword,
    embeddedPgPort: int(env, "EMBEDDED_PG_PORT", 54329, 1, 65535),
    host: env.HOST || (production ? "0.0.0.0" : "127.0.0.1"),
    port: int(env, "PORT", 5678, 0, 65535),
    statementTimeoutMs: int(env, "STATEMENT_TIMEOUT_MS", 5000, 100, 3_600_000),
    apiPoolSize: int(env, "API_POOL_SIZE", 10, 2, 1000),
    metricsToken: env.METRICS_TOKEN || null,
    worker: {
      concurrency: int(env, "WORKER_CONCURRENCY", 10, 1, 1000),
      localQueueSize: int(env, "WORKER_LOCAL_QUEUE_SIZE", 500, -1, 100_000),
      pollIntervalMs: int(env, "WORKER_POLL_INTERVAL_MS", 2000, 100, 600_000),
      exactWake: oneOf(env, "WORKER_EXACT_WAKE", ["true", "false"], "true") === "true",
      deadAfterMs: int(env, "WORKER_DEAD_AFTER_MS", 30_000, 1000, 3_600_000),
      tasks: list(env, "WORKER_TASKS"),
      shutdownTimeoutMs: int(env, "SHUTDOWN_TIMEOUT_MS", 30_000, 1000, 3_600_000),
    },
    history: {
      retentionDays: int(env, "JOB_HISTORY_RETENTION_DAYS", 14, 1, 3650),
      flushDelayMs: int(env, "JOB_HISTORY_FLUSH_MS", 100, 0, 10_000),
    },
    log: {
      level: oneOf(env, "LOG_LEVEL", ["debug", "info", "warn", "error"], "info"),
      format: oneOf(env, "LOG_FORMAT", ["pretty", "json"], production ? "json" : "pretty"),
    },
    accounts: {
      appUrl: httpUrl(env, "APP_URL", "http://localhost:5678"),
      sessionLifetimeDays: int(env, "SESSION_LIFETIME_DAYS", 30, 1, 3650),
      sessionCacheMs: int(env, "SESSION_CACHE_MS", 60_000, 0, 3_600_000),
      notificationRetentionDays: int(env, "NOTIFICATION_RETENTION_DAYS", 30, 1, 3650),
    },
    uploads: {
      dir: path.join(path.resolve(cwd, env.DATA_DIR || ".data"), "uploads"),
      ttlHours: int(env, "FILE_UPLOAD_TTL_HOURS", 24, 1, 87_600),
      maxBytes: int(env, "FILE_UPLOAD_MAX_BYTES", 10 * 1024 * 1024, 1, 1024 * 1024 * 1024),
      expiringWindowHours: int(env, "FILE_EXPIRING_WINDOW_HOURS", 6, 1, 8760),
    },
    webhooks: {
      allowedNetworks: cidrs(env, "WEBHOOK_ALLOWED_NETWORKS"),
      // Below the webhooks__deliver task's 60 s time limit, so an attempt is always recorded.
      timeoutMs: int(env, "WEBHOOK_TIMEOUT_MS", 15_000, 100, 50_000),
      outboxRetentionHours: int(env, "OUTBOX_RETENTION_HOURS", 168, 1, 87_600),
    },
    email: {
      smtpUrl: smtpUrl(env, "SMTP_URL"),
      from: env.EMAIL_FROM || "Hourglass <no-reply@hourglass.invalid>",
      timeoutMs: int(env, "SMTP_TIMEOUT_MS", 10_000, 100, 600_000),
    },
    gmDatabaseUrl: postgresUrl(env, "GM_DBURL"),
  };
}
