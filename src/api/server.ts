// The HTTP server: /graphql (PostGraphile), /graphiql in development, /healthz for probes,
// POST /uploads for files.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type pg from "pg";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { createPool } from "../db/pool.ts";
import { authenticate } from "./auth.ts";
import { loadErrorCodes, makeMaskError, unexpected } from "./errors.ts";
import { makePreset } from "./preset.ts";
import { uploadHandler } from "./uploads.ts";

export interface HealthCheck {
  /** null: this process runs no worker. */
  workerRunning: () => boolean | null;
}

export interface ApiHandle {
  url: string;
  server: Server;
  pool: pg.Pool;
  stop(): Promise<void>;
}

export interface ApiOptions {
  authUrl: string;
  config: Pick<Config, "host" | "port" | "statementTimeoutMs" | "mode" | "roles" | "accounts" | "uploads">;
  log: Logger;
  health: HealthCheck;
}

async function databaseOk(pool: pg.Pool): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 2000)));
    return await Promise.race([pool.query("select 1").then(() => true), timeout]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

export async function startApi({ authUrl, config, log, health }: ApiOptions): Promise<ApiHandle> {
  const apiLog = log.child({ component: "api" });
  const pool = createPool(authUrl, { max: 20, name: "api" }, apiLog);
  const development = config.mode === "development";
  const pgl = postgraphile(
    makePreset({
      pool,
      visitorRole: config.roles.visitor,
      statementTimeoutMs: config.statementTimeoutMs,
      sessionLifetimeDays: config.accounts.sessionLifetimeDays,
      development,
      maskError: makeMaskError(loadErrorCodes(), apiLog),
    }),
  );

  const app = express();
  app.disable("x-powered-by");
  app.get("/healthz", async (_req, res) => {
    const database = await databaseOk(pool);
    const worker = health.workerRunning();
    const ok = database && worker !== false;
    res.status(ok ? 200 : 503).json({
      status: ok ? "ok" : "unhealthy",
      database: database ? "ok" : "unreachable",
      worker: worker === null ? "not in this process" : worker ? "running" : "stopped",
    });
  });
  app.use("/graphql", authenticate(pool, apiLog));
  app.post("/uploads", authenticate(pool, apiLog), uploadHandler(pool, config, apiLog));

  const server = createServer(app);
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
    stop: () =>
      (stopping ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 5000).unref();
        });
        await pgl.release();
        await pool.end();
        apiLog.info("API stopped");
      })()),
  };
}
