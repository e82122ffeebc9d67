// The HTTP server: /graphql (PostGraphile), /graphiql in development, /healthz for probes,
// /metrics for Prometheus, POST /uploads for files.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import express from "express";
import { postgraphile } from "postgraphile";
import { PgSubscriber } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type pg from "pg";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { createPool, queryWithTimeout } from "../db/pool.ts";
import { coalesceTransactionStart } from "./transaction-start.ts";
import { authenticate } from "./auth.ts";
import { SessionCache } from "./sessions.ts";
import { loadErrorCodes, makeMaskError, unexpected } from "./errors.ts";
import { makePreset } from "./preset.ts";
import { uploadHandler } from "./uploads.ts";
import { metricsHandler } from "./metrics.ts";
import { JobEventListeners, type EventLimits } from "./events.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { loadTasks } from "../worker/catalogue.ts";
import type { ResolvedTask } from "../worker/task.ts";

export interface HealthCheck {
  /** null: this process runs no worker. */
  workerRunning: () => boolean | null;
}

export interface ApiHandle {
  url: string;
  server: Server;
  pool: pg.Pool;
  /** Bearer tokens to sessions, remembered while its LISTEN connection is up. */
  sessions: SessionCache;
  stop(): Promise<void>;
}

export interface ApiOptions {
  authUrl: string;
  config: Pick<Config, "host" | "port" | "statementTimeoutMs" | "apiPoolSize" | "mode" | "roles" | "accounts" | "uploads" | "worker" | "metricsToken">;
  log: Logger;
  health: HealthCheck;
  /** For triggerTask's payload check; loaded from tasks/ when not given. */
  tasks?: readonly ResolvedTask[];
  /** jobEvents: how often a subscription re-checks its session (30 s), how many events may wait for its client (MAX_PENDING_EVENTS), how often the LISTEN connection is probed (PROBE_MS); tests lower them. */
  eventLimits?: EventLimits;
  /** How long a request waits for a pool connection (API_CONNECT_TIMEOUT_MS; tests shorten it). */
  connectTimeoutMs?: number;
  /** The session listener's first wait before it reconnects (default 500 ms; tests lengthen it). */
  sessionListenerRetryMs?: number;
}

interface JobFacts {
  queued: number;
  scheduled: number;
  running: number;
  failed: number;
  oldestDueSeconds: number | null;
  failuresLast24h: number;
  workersAlive: number;
  schedulerHealthy: boolean;
}

/**
 * The job system's facts (app_hidden.job_health, the same as GraphQL's jobOverview: workers alive by
 * each one's own WORKER_DEAD_AFTER_MS), or null when the database does not answer within two
 * seconds. Totals only: /healthz needs no sign-in, so nothing here names a task or a job.
 *
 * The query itself is cancelled at two seconds too (a statement_timeout of its own): a probe that
 * gave up must not leave its query holding one of the pool's connections, or probes every few
 * seconds against a slow database would take them all. Probes that arrive while one is under way
 * share its answer.
 */
function jobFactsReader(pool: pg.Pool): () => Promise<JobFacts | null> {
  const read = () =>
    queryWithTimeout<Record<string, any>>(pool, "select * from app_hidden.job_health()", 2000).then((rows): JobFacts => {
      const r = rows[0]!;
      return {
        queued: r.queued,
        scheduled: r.scheduled,
        running: r.running,
        failed: r.failed,
        oldestDueSeconds: r.oldest_due_seconds === null ? null : Math.round(r.oldest_due_seconds * 1000) / 1000,
        failuresLast24h: r.failures_last_24h,
        workersAlive: r.workers_alive,
        schedulerHealthy: r.scheduler_healthy,
      };
    });
  let inFlight: Promise<JobFacts | null> | null = null;
  const readWithin = async (): Promise<JobFacts | null> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 2000)));
      return await Promise.race([read(), timeout]);
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  };
  return () => (inFlight ??= readWithin().finally(() => (inFlight = null)));
}

/**
 * How long a request waits for one of the pool's connections (all busy, or the database not
 * answering a new one) before it fails with UNAVAILABLE, instead of waiting for ever
 * (a network cut: minutes, until TCP gives up).
 */
export const API_CONNECT_TIMEOUT_MS = 10_000;

export async function startApi({ authUrl, config, log, health, tasks, eventLimits, connectTimeoutMs, sessionListenerRetryMs }: ApiOptions): Promise<ApiHandle> {
  const apiLog = log.child({ component: "api" });
  const pool = createPool(authUrl, { max: config.apiPoolSize, name: "api", connectTimeoutMs: connectTimeoutMs ?? API_CONNECT_TIMEOUT_MS }, apiLog);
  coalesceTransactionStart(pool);
  const development = config.mode === "development";
  // One listening connection per process for every subscription (jobEvents).
  const pgSubscriber = new PgSubscriber(pool);
  const eventListeners = new JobEventListeners(pool, apiLog);
  const sessions = new SessionCache(pool, {
    listenUrl: authUrl,
    ttlMs: config.accounts.sessionCacheMs,
    log: apiLog,
    retryMs: sessionListenerRetryMs,
  });
  sessions.start();
  const pgl = postgraphile(
    makePreset({
      pool,
      sessions,
      pgSubscriber,
      eventListeners,
      visitorRole: config.roles.visitor,
      statementTimeoutMs: config.statementTimeoutMs,
      sessionLifetimeDays: config.accounts.sessionLifetimeDays,
      development,
      maskError: makeMaskError(loadErrorCodes(), apiLog),
      tasks: tasks ?? (await loadTasks()),
      eventLimits,
      log: apiLog,
    }),
  );

  const jobFacts = jobFactsReader(pool);
  const app = express();
  app.disable("x-powered-by");
  app.get("/healthz", async (_req, res) => {
    // 503 only for what is wrong with this process (its database, its worker): a load balancer
    // must not take every API process out because the workers elsewhere are down. The
    // cluster's state is in `jobs` for monitoring (schedulerHealthy: some worker is alive).
    const jobs = await jobFacts();
    const worker = health.workerRunning();
    const ok = jobs !== null && worker !== false;
    res.status(ok ? 200 : 503).json({
      status: ok ? "ok" : "unhealthy",
      database: jobs ? "ok" : "unreachable",
      worker: worker === null ? "not in this process" : worker ? "running" : "stopped",
      jobs,
    });
  });
  // The operations dashboard (a static app on the GraphQL API) and the sign-in links' landing page.
  app.use(dashboardRoutes({ log: apiLog }));
  app.get("/metrics", metricsHandler(pool, { token: config.metricsToken, timeoutMs: config.statementTimeoutMs, log: apiLog }));
  app.use("/graphql", authenticate(sessions, apiLog));
  app.post("/uploads", authenticate(sessions, apiLog), uploadHandler(pool, config, apiLog));

  const server = createServer(app);
  // Websockets (subscriptions) leave the HTTP server's connection tracking once upgraded, so
  // stop() would wait for them forever: they are tracked here and closed on stop (clients
  // resubscribe to another API process).
  const upgraded = new Set<Duplex>();
  server.on("upgrade", (_req, socket: Duplex) => {
    upgraded.add(socket);
    socket.once("close", () => upgraded.delete(socket));
  });
  const serv = pgl.createServ(grafserv);
  await serv.addTo(app, server);
  // Last: anything that reaches Express's error path gets a generic body (its default handler
  // would send the stack outside production).
  app.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (res.headersSent) return next(err);
    res.status(500).json({ errors: [unexpected(apiLog, "request failed", err)] });
  });
  // Schema build errors surface here rather than on the first request.
  await pgl.getSchema();

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.address.includes(":") ? `[${address.address}]` : address.address;
  const url = `http://${host === "0.0.0.0" ? "localhost" : host}:${address.port}`;

  let stopping: Promise<void> | undefined;
  return {
    url,
    server,
    pool,
    sessions,
    stop: () =>
      (stopping ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const socket of upgraded) socket.destroy();
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 5000).unref();
        });
        await pgl.release();
        pgSubscriber.release();
        await eventListeners.close();
        await sessions.stop();
        await pool.end();
        apiLog.info("API stopped");
      })()),
  };
}
