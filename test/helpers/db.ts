// Per-file databases cloned from the run's migrated template, and helpers that act the way the
// system's users do: as the visitor role with a session (so RLS really applies), as the owner
// (a DBA), and as a worker draining the queue through the real task wrapper.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { inject } from "vitest";
import { runOnce } from "graphile-worker";
import { loadConfig, type Config } from "../../src/config.ts";
import { createLogger, workerLogger, type Logger } from "../../src/log.ts";
import { createPool } from "../../src/db/pool.ts";
import { HistoryWriter } from "../../src/worker/history.ts";
import { wrapTask } from "../../src/worker/wrap.ts";
import { createServices } from "../../src/worker/services.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { databaseUrl, testEnv, type TestRun } from "./env.ts";

export interface TestDb {
  name: string;
  run: TestRun;
  ownerUrl: string;
  authUrl: string;
  /** Owner (DBA) connection pool. */
  pool: pg.Pool;
  log: Logger;
  drop(): Promise<void>;
}

export const testLog = createLogger({ level: testEnv.logLevel, format: "pretty" });

export async function createTestDb(): Promise<TestDb> {
  const run = inject("run");
  const name = `${run.prefix}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: run.serverUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${admin.escapeIdentifier(name)} template ${admin.escapeIdentifier(run.template)}`);
  } finally {
    await admin.end();
  }
  const ownerUrl = databaseUrl(run.serverUrl, name);
  const pool = new pg.Pool({ connectionString: ownerUrl, max: 8 });
  pool.on("error", () => {});
  return {
    name,
    run,
    ownerUrl,
    authUrl: databaseUrl(run.serverUrl, name, { name: run.roles.authenticator, password: run.authenticatorPassword }),
    pool,
    log: testLog,
    async drop() {
      await pool.end();
      const c = new pg.Client({ connectionString: run.serverUrl });
      await c.connect();
      try {
        await c.query(`drop database if exists ${c.escapeIdentifier(name)} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** A Config for code under test, pointed at this database, with test-friendly overrides. */
export function testConfig(db: TestDb, env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: "test",
    DATABASE_URL: db.ownerUrl,
    AUTHENTICATOR_PASSWORD: db.run.authenticatorPassword,
    DATABASE_AUTHENTICATOR: db.run.roles.authenticator,
    DATABASE_VISITOR: db.run.roles.visitor,
    PORT: "0",
    LOG_LEVEL: testEnv.logLevel,
    JOB_HISTORY_FLUSH_MS: "10",
    ...env,
  });
}

/** How many of the test APIs' request connections (application_name hourglass-api) wait on a lock. */
export async function apiBackendsWaitingOnLock(db: TestDb): Promise<number> {
  const { rows } = await db.pool.query(
    "select count(*)::int as n from pg_stat_activity where application_name = 'hourglass-api' and datname = current_database() and wait_event_type = 'Lock'",
  );
  return rows[0].n as number;
}

export async function createUser(db: TestDb, opts: { email?: string; isAdmin?: boolean } = {}) {
  const email = opts.email ?? `user-${randomBytes(4).toString("hex")}@example.com`;
  const { rows } = await db.pool.query<{ id: string }>(
    "insert into app_public.users (email, is_admin) values ($1, $2) returning id::text",
    [email, opts.isAdmin ?? false],
  );
  return { id: rows[0]!.id, email };
}

/** Starts a real session; returns the bearer token and the session id. */
export async function signIn(db: TestDb, userId: string, lifetime = "30 days") {
  const { rows } = await db.pool.query<{ token: string }>("select app_private.create_session($1, $2::interval) as token", [userId, lifetime]);
  const token = rows[0]!.token;
  const { rows: s } = await db.pool.query<{ id: string }>(
    "select id from app_private.sessions where token_hash = sha256(convert_to($1, 'UTF8'))",
    [token],
  );
  return { token, sessionId: s[0]!.id };
}

/** Begins a transaction as the visitor role with the given session (as the API does per request). */
async function beginAsVisitor(db: TestDb, client: pg.PoolClient, sessionId: string | null): Promise<void> {
  await client.query("begin");
  await client.query("select set_config('role', $1, true), set_config('hourglass.session_id', $2, true)", [
    db.run.roles.visitor,
    sessionId ?? "",
  ]);
}

/** Runs fn in a transaction as the visitor role with the given session, then rolls back. */
export async function asVisitor<T>(db: TestDb, sessionId: string | null, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await db.pool.connect();
  try {
    await beginAsVisitor(db, client, sessionId);
    return await fn(client);
  } finally {
    await client.query("rollback");
    client.release();
  }
}

export interface QueuedJob {
  id: string;
  task_identifier: string;
  key: string | null;
  run_at: Date;
  priority: number;
  max_attempts: number;
  attempts: number;
  locked_by: string | null;
  last_error: string | null;
}

/** Jobs in the queue, through graphile-worker's public view. */
export async function listJobs(db: TestDb): Promise<QueuedJob[]> {
  const { rows } = await db.pool.query<QueuedJob>(
    "select id::text, task_identifier, key, run_at, priority, max_attempts, attempts, locked_by, last_error from graphile_worker.jobs order by id",
  );
  return rows;
}

/** Runs every due job once through the real wrapper, then writes the history. */
export async function drainJobs(db: TestDb, tasks: readonly ResolvedTask[], config = testConfig(db), log = db.log): Promise<void> {
  const pool = createPool(db.ownerUrl, { max: 4, name: "test-drain" }, log);
  const historyPool = createPool(db.ownerUrl, { max: 1, name: "test-history", settings: "-c synchronous_commit=off" }, log);
  const history = new HistoryWriter(historyPool, { flushDelayMs: 5, log });
  const services = await createServices(config, log);
  const runtime = { history, log, workerId: "test:drain", config, services };
  try {
    await runOnce({
      pgPool: pool,
      taskList: Object.fromEntries(tasks.map((t) => [t.identifier, wrapTask(t, runtime)])),
      logger: workerLogger(log),
    });
    await history.close();
  } finally {
    services.close();
    await Promise.all([pool.end(), historyPool.end()]);
  }
}

export interface JobRun {
  job_id: string;
  task_identifier: string;
  attempt: number;
  max_attempts: number;
  outcome: string;
  error: string | null;
  result: unknown;
  payload: unknown;
  job_key: string | null;
  duration_ms: number | null;
  finished_at: Date | null;
}

export async function jobRuns(db: TestDb, task?: string): Promise<JobRun[]> {
  const { rows } = await db.pool.query<JobRun>(
    `select job_id::text, task_identifier, attempt, max_attempts, outcome, error, result, payload, job_key, duration_ms, finished_at
     from app_public.job_runs where $1::text is null or task_identifier = $1 order by started_at, attempt`,
    [task ?? null],
  );
  return rows;
}

/** Makes every queued job due now (time is controlled through data, not by sleeping). */
export async function makeJobsDue(db: TestDb): Promise<void> {
  await db.pool.query("select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs), run_at := now())");
}

/** Runs fn in a transaction as the visitor role with the given session, and commits it. */
export async function asUser<T>(db: TestDb, sessionId: string | null, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await db.pool.connect();
  try {
    await beginAsVisitor(db, client, sessionId);
    const result = await fn(client);
    await client.query("commit");
    return result;
  } catch (err) {
    await client.query("rollback");
    throw err;
  } finally {
    client.release();
  }
}

/** Runs sql as the user and commits; returns the error code it was refused with, or null when it succeeded. */
export async function refusal(db: TestDb, sessionId: string | null, sql: string, params: unknown[] = []): Promise<string | null> {
  try {
    await asUser(db, sessionId, (c) => c.query(sql, params));
    return null;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}
