// Brings a database up to date: roles, graphile-worker's schema (first, so our triggers can call
// it), our committed migrations, then the task catalogue. Every process runs this at start-up;
// a blocking advisory lock serialises them, so N processes starting at once apply each step once
// (graphile-migrate's own lock is try-only and would make the losers fail).
import path from "node:path";
import pg from "pg";
import { migrate as runCommittedMigrations, Logger as MigrateLogger } from "graphile-migrate";
// graphile-migrate keeps its pool for 200 ms after use, with an error handler that calls
// process.exit(1): a database restart in that window would kill an API or worker process.
// We close its idle pools as soon as migrating is done.
import { clearAllPools as closeMigratePools } from "graphile-migrate/dist/pgReal.js";
import { runMigrations as installWorkerSchema } from "graphile-worker";
import { graphileLogFactory, workerLogger, type Logger } from "../log.ts";
import { ensureRoles, type RoleNames } from "./roles.ts";
import { createPool } from "./pool.ts";
import { loadTasks, syncCatalogue } from "../worker/catalogue.ts";
import { readSchedules } from "../worker/crontab.ts";
import type { ResolvedTask } from "../worker/task.ts";

export const MIGRATIONS_DIR = path.resolve(import.meta.dirname, "../../migrations");

/** `hourglass.migrate` as a lock key (any constant would do; this one is ours alone). */
const MIGRATION_LOCK = "7396541027749127330";

export interface MigrateOptions {
  ownerUrl: string;
  roles: RoleNames;
  authenticatorPassword: string | null;
  /** Set the authenticator's password even when the role exists (embedded server, tests). */
  resetPassword?: boolean;
  log: Logger;
  /** Defaults to loading tasks/. */
  tasks?: readonly ResolvedTask[];
}

export function migrateSettings(ownerUrl: string, roles: RoleNames, log: Logger) {
  return {
    connectionString: ownerUrl,
    migrationsFolder: MIGRATIONS_DIR,
    placeholders: {
      ":DATABASE_VISITOR": roles.visitor,
      ":DATABASE_AUTHENTICATOR": roles.authenticator,
    },
    // Its @graphile/logger is an older copy than graphile-worker's; the factory shape is the same.
    logger: new MigrateLogger(graphileLogFactory(log.child({ component: "graphile-migrate" })) as never),
  };
}

export async function migrateDatabase(options: MigrateOptions): Promise<void> {
  const { ownerUrl, roles, log } = options;
  const tasks = options.tasks ?? (await loadTasks());
  const client = new pg.Client({ connectionString: ownerUrl, application_name: "hourglass-migrate" });
  client.on("error", (err) => log.warn("migration connection error", { err }));
  await client.connect();
  try {
    const started = Date.now();
    const { rows } = await client.query<{ locked: boolean }>("select pg_try_advisory_lock($1) as locked", [MIGRATION_LOCK]);
    if (!rows[0]?.locked) {
      log.info("another process is migrating this database; waiting for it");
      await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
    }
    try {
      await ensureRoles(client, roles, options.authenticatorPassword, log, { resetPassword: options.resetPassword ?? false });
      const pool = createPool(ownerUrl, { max: 2, name: "migrate" }, log);
      try {
        await installWorkerSchema({ pgPool: pool, logger: workerLogger(log) });
      } finally {
        await pool.end();
      }
      try {
        await runCommittedMigrations(migrateSettings(ownerUrl, roles, log));
      } finally {
        closeMigratePools();
      }
      await syncCatalogue(client, tasks);
      await client.query("select app_private.sync_schedules($1::jsonb)", [JSON.stringify(await readSchedules())]);
      log.info("database is up to date", { tasks: tasks.length, ms: Date.now() - started });
    } finally {
      await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]);
    }
  } finally {
    await client.end();
  }
}
