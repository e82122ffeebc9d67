// `npm start`: the database (embedded unless DATABASE_URL is set), migrations, the GraphQL API and
// the worker in one process — or one role only with --api / --worker, for scaling out.
// SIGINT/SIGTERM shut down in order: stop taking requests, let running jobs finish and write
// their history, then stop the embedded server. A second signal forces the exit.
import { parseArgs } from "node:util";
import { loadConfig, ConfigError } from "./config.ts";
import { createLogger, type Logger } from "./log.ts";
import { resolveDatabase, safeUrl, type Database } from "./db/resolve.ts";
import { migrateDatabase } from "./db/migrate.ts";
import { loadTasks } from "./worker/catalogue.ts";
import { startWorker, type WorkerHandle } from "./worker/runner.ts";
import { startApi, type ApiHandle } from "./api/server.ts";

const startedAt = performance.now();

function roles(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: { api: { type: "boolean" }, worker: { type: "boolean" }, "migrate-only": { type: "boolean" } },
    strict: true,
  });
  const only = values.api || values.worker;
  return {
    api: !values["migrate-only"] && (!only || !!values.api),
    worker: !values["migrate-only"] && (!only || !!values.worker),
  };
}

async function main() {
  let config;
  let role;
  try {
    config = loadConfig();
    role = roles(process.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError || err instanceof TypeError) {
      process.stderr.write(`Configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.log);

  let db: Database | null = null;
  let worker: WorkerHandle | null = null;
  let api: ApiHandle | null = null;
  let shuttingDown = false;

  const shutdown = async (reason: string, code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info("shutting down", { reason });
    const force = setTimeout(() => {
      log.error("shutdown is taking too long; exiting");
      process.exit(1);
    }, config.worker.shutdownTimeoutMs + 15_000);
    force.unref();
    try {
      await api?.stop();
      await worker?.stop();
    } catch (err) {
      log.error("error during shutdown", { err });
      code = code || 1;
    }
    await db?.embedded?.stop();
    log.info("bye");
    process.exit(code);
  };
  let signals = 0;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (++signals > 1) {
        log.warn("second signal: forcing exit");
        worker?.history.abandonRunning(`worker forced to exit by ${signal}`);
        void Promise.race([worker?.history.close(), new Promise((r) => setTimeout(r, 2000))]).finally(() => {
          void db?.embedded?.stop().finally(() => process.exit(130));
        });
        return;
      }
      void shutdown(signal, 0);
    });
  }

  try {
    db = await resolveDatabase(config, log);
    const tasks = await loadTasks();
    await migrateDatabase({
      ownerUrl: db.ownerUrl,
      roles: config.roles,
      authenticatorPassword: db.authenticatorPassword,
      resetPassword: db.resetPassword,
      log,
      tasks,
    });
    if (!role.api && !role.worker) {
      await db.embedded?.stop();
      return;
    }
    if (role.worker) {
      worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log });
      void worker.runner.promise.catch(() => shutdown("the worker stopped with an error", 1));
    }
    if (role.api) {
      const w = worker;
      api = await startApi({
        authUrl: db.authUrl,
        config,
        log,
        health: { workerRunning: () => (w ? w.isRunning() : null) },
      });
    }
    summary(log, db, api, worker, config.mode);
  } catch (err) {
    log.error("start-up failed", { err });
    await api?.stop().catch(() => {});
    await worker?.stop().catch(() => {});
    await db?.embedded?.stop().catch(() => {});
    process.exit(1);
  }
}

function summary(log: Logger, db: Database, api: ApiHandle | null, worker: WorkerHandle | null, mode: string) {
  log.info("Hourglass is ready", {
    ms: Math.round(performance.now() - startedAt),
    mode,
    database: safeUrl(db.ownerUrl) + (db.embedded ? ` (embedded, data in ${db.embedded.dataDir})` : ""),
    ...(api ? { graphql: `${api.url}/graphql`, health: `${api.url}/healthz` } : {}),
    ...(api && mode === "development" ? { graphiql: `${api.url}/graphiql` } : {}),
    ...(worker ? { worker: worker.workerId } : {}),
  });
}

await main();
