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
  /** How long a checkout may wait, for a free connection or a new one (unset: for ever). */
  connectTimeoutMs?: number;
}

export function createPool(connectionString: string, options: PoolOptions, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: options.max,
    min: options.min ?? 0,
    ...(options.connectTimeoutMs ? { connectionTimeoutMillis: options.connectTimeoutMs } : {}),
    application_name: `hourglass-${options.name}`,
    ...(options.settings ? { options: options.settings } : {}),
  });
  pool.on("error", (err) => log.error("idle database client failed", { pool: options.name, err }));
  pool.on("connect", (client) => {
    client.on("error", (err) => log.warn("database client error", { pool: options.name, err }));
  });
  return pool;
}

/** Node's errors for a connection that broke or could not be made. */
const NETWORK_ERRORS = new Set(["ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTCONN"]);

/**
 * True when a query failed because its connection was lost (server restart, failover, a
 * terminated backend, a network cut) or could not be opened: the statement did not run to its end
 * on that connection and a new one may succeed. False for errors of the statement itself.
 */
export function isConnectionLoss(err: unknown): boolean {
  if (err instanceof pg.DatabaseError) {
    // 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot connect now.
    return /^(08|57P0[1-3])/.test(err.code ?? "");
  }
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && NETWORK_ERRORS.has(code)) return true;
  // pg's own messages for a client whose connection ended (they carry no code).
  return /Connection terminated|not queryable|Client was closed/i.test(err.message);
}

/**
 * True when a pool checkout gave up waiting for a free connection (connectTimeoutMs). One that
 * gave up waiting for a new connection is a connection loss ("Connection terminated due to
 * connection timeout").
 */
function isConnectTimeout(err: unknown): boolean {
  // pg-pool's own message (no code).
  return err instanceof Error && /^timeout exceeded when trying to connect/i.test(err.message);
}

/** The database out of reach for a request: its connection lost, or no connection to be had in time. */
export function isUnavailable(err: unknown): boolean {
  return isConnectionLoss(err) || isConnectTimeout(err);
}

/**
 * Runs fn on a client of the pool's own, for work that opens a transaction: if fn fails, the
 * transaction is rolled back, and a client whose rollback fails too (its connection is gone) is
 * destroyed rather than returned to the pool.
 */
export async function withTransactionClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    return await fn(client);
  } catch (err) {
    await client.query("rollback").catch((e: Error) => (broken = e));
    throw err;
  } finally {
    client.release(broken);
  }
}

/**
 * One statement in a transaction of its own under a statement_timeout of its own: the rows it
 * returned. Without parameters it takes one round trip (the transaction's statements go as one
 * simple-protocol message; a failure stops it inside the transaction, which withTransactionClient
 * rolls back); with them, three.
 */
export function queryWithTimeout<R extends Record<string, unknown>>(pool: pg.Pool, sql: string, timeoutMs: number, values?: unknown[]): Promise<R[]> {
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new RangeError(`not a statement timeout: ${timeoutMs}`);
  return withTransactionClient(pool, async (client) => {
    if (values === undefined) {
      const results = (await client.query(`begin; set local statement_timeout = ${timeoutMs}; ${sql}; commit`)) as unknown as pg.QueryResult<R>[];
      return results[2]!.rows;
    }
    await client.query(`begin; set local statement_timeout = ${timeoutMs}`);
    const { rows } = await client.query<R>(sql, values);
    await client.query("commit");
    return rows;
  });
}

type AnyQuery = (...args: unknown[]) => unknown;
const ORIGINAL_QUERY = Symbol("original query");
type RetryingClient = pg.PoolClient & { [ORIGINAL_QUERY]: AnyQuery };

/**
 * Makes the named statements that `retry` picks re-run, on a new connection from the same pool,
 * when their connection is lost mid-flight: with backoff (100 ms doubling to 5 s) until they
 * succeed, fail for another reason, or `giveUp()` says to stop. Only for statements that are
 * safe to run twice (one whose first run committed but whose reply was lost runs again) and that
 * run outside a transaction. The caller keeps the broken client until the retry settles; the
 * pool drops it when it is released.
 */
export function retryOnConnectionLoss(
  pool: pg.Pool,
  options: { retry: (statementName: string) => boolean; giveUp: () => boolean; log: Logger },
): void {
  const again = async (config: pg.QueryConfig, err: unknown): Promise<pg.QueryResult> => {
    options.log.warn("a statement lost its connection; running it again on a new one", { statement: config.name, err });
    for (let attempt = 1; ; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min(5000, 50 * 2 ** attempt)));
      if (options.giveUp()) throw err;
      let client: RetryingClient | null = null;
      try {
        client = (await pool.connect()) as RetryingClient;
        const result = (await client[ORIGINAL_QUERY](config)) as pg.QueryResult;
        client.release();
        return result;
      } catch (failed) {
        const lost = isConnectionLoss(failed);
        // A broken client is destroyed rather than returned to the pool.
        client?.release(lost ? (failed as Error) : undefined);
        if (!lost) throw failed;
        err = failed;
      }
    }
  };
  pool.on("connect", (c) => {
    const client = c as RetryingClient;
    const query = (client[ORIGINAL_QUERY] = client.query.bind(client) as AnyQuery);
    (client as unknown as { query: AnyQuery }).query = (...args) => {
      const config = args[0] as pg.QueryConfig | null;
      if (args.length !== 1 || typeof config !== "object" || typeof config?.name !== "string" || !options.retry(config.name)) {
        return query(...args);
      }
      return (query(config) as Promise<pg.QueryResult>).catch((err: unknown) => {
        if (!isConnectionLoss(err)) throw err;
        return again(config, err);
      });
    };
  });
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
  const opened = await Promise.allSettled(Array.from({ length: n }, () => pool.connect()));
  // The ones that opened go back to the pool even when another failed.
  for (const o of opened) if (o.status === "fulfilled") o.value.release();
  const failed = opened.find((o) => o.status === "rejected");
  if (failed) throw failed.reason;
}
