// pg Pools with error handlers attached: an idle client whose server connection drops must be
// logged, not crash the process with an unhandled 'error' event.
import pg from "pg";
import type { Logger } from "../log.ts";

export function createPool(connectionString: string, options: { max: number; name: string }, log: Logger): pg.Pool {
  const pool = new pg.Pool({ connectionString, max: options.max, application_name: `hourglass-${options.name}` });
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
