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

  let db = null as Database | null; // "as": assigned inside start-up, read by shutdown
  let worker = null as WorkerHandle | null;
  let api = null as ApiHandle | null;
  let shuttingDown = false;
  let startup: Promise<void> = Promise.resolve();

  const shutdown = async (reason: string, code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info("shutting down", { reason });
    const force = setTimeout(() => {
      log.error("shutdown is taking too long; exiting");
      process.exit(1);
    }, config.worker.shutdownTimeoutMs + 15_000);
    force.unref();
    // A signal during start-up: let it reach a consistent point first (start-up stops early).
    await startup.catch(() => {});
    for (const [name, stop] of [["API", () => api?.stop()], ["worker", () => worker?.stop()]] as const) {
      try {
        await stop();
      } catch (err) {
        log.error(`error while stopping the ${name}`, { err });
        code = code || 1;
      }
    }
    await db?.embedded?.stop().catch((err: unknown) => log.error("error while stopping the embedded server", { err }));
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
          void (db?.embedded?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
        });
        return;
      }
      void shutdown(signal, 0);
    });
  }

  startup = (async () => {
    db = await resolveDatabase(config, log);
    if (shuttingDown) return;
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
    if (shuttingDown) return;
    if (role.worker) {
      worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log });
      void worker.died.then(() => shutdown("the worker stopped by itself", 1));
    }
    if (role.api && !shuttingDown) {
      const w = worker;
      api = await startApi({
        authUrl: db.authUrl,
        config,
        log,
        tasks,
        health: { workerRunning: () => (w ? w.isRunning() : null) },
      });
    }
    if (!shuttingDown) summary(log, db, api, worker, config.mode);
  })();
  try {
    await startup;
  } catch (err) {
    log.error("start-up failed", { err });
    if (!shuttingDown) {
      shuttingDown = true;
      await api?.stop().catch(() => {});
      await worker?.stop().catch(() => {});
      await db?.embedded?.stop().catch(() => {});
      process.exit(1);
    }
  }
}

function summary(log: Logger, db: Database, api: ApiHandle | null, worker: WorkerHandle | null, mode: string) {
  log.info("Hourglass is ready", {
    ms: Math.round(performance.now() - startedAt),
    mode,
    database: safeUrl(db.ownerUrl) + (db.embedded ? ` (embedded, data in ${db.embedded.dataDir})` : ""),
    ...(api ? { graphql: `${api.url}/graphql`, dashboard: `${api.url}/dashboard`, health: `${api.url}/healthz` } : {}),
    ...(api && mode === "development" ? { graphiql: `${api.url}/graphiql` } : {}),
    ...(worker ? { worker: worker.workerId } : {}),
  });
}

await main();
