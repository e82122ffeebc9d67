// pg Pools with error handlers attached: an idle client whose server connection drops must be
// logged, not crash the process with an unhandled 'error' event.
import pg from "pg";
import type { Logger } from "../log.ts";

export interface PoolOptions {
  max: number;
  /** Shown in pg_stat_activity as hourglass-<name>. */
  name: string;
  /** Server settings for every connection, e.g. "-c synchronous_commit=off". */
  settings?: string;
  /** Connections kept open when idle (the rest close after 10 s idle). */
  min?: number;
}

export function createPool(connectionString: string, options: PoolOptions, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: options.max,
    min: options.min ?? 0,
    application_name: `hourglass-${options.name}`,
    ...(options.settings ? { options: options.settings } : {}),
  });
  pool.on("error", (err) => log.error("idle database client failed", { pool: options.name, err }));
  pool.on("connect", (client) => {
    client.on("error", (err) => log.warn("database client error", { pool: options.name, err }));
  });
  return pool;
}

/** Replace the user and password of a connection string (the API's authenticator login). */
export function withCredentials(connectionString: string, user: string, password: string): string {
  const url = new URL(connectionString);
  url.username = encodeURIComponent(user);
  url.password = encodeURIComponent(password);
  return url.toString();
}

/**
 * Opens `n` connections now, so that the first burst of work does not also pay for starting
 * server backends (several milliseconds each). With `min` they then stay open.
 */
export async function warmPool(pool: pg.Pool, n: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  for (const c of clients) c.release();
}
