import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADAPTOR_BEGIN, ADAPTOR_SETTINGS, coalesceTransactionStart } from "../../src/api/transaction-start.ts";
import { createTestDb, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createTestDb();
  pool = new pg.Pool({ connectionString: db.authUrl, max: 2 });
  coalesceTransactionStart(pool);
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** Runs fn on one client and counts the server's ReadyForQuery messages: one per round trip. */
async function roundTrips<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<{ result: T; trips: number }> {
  const c = await pool.connect();
  let trips = 0;
  const connection = (c as unknown as { connection: { on(e: string, f: () => void): void; off(e: string, f: () => void): void } }).connection;
  const count = () => trips++;
  connection.on("readyForQuery", count);
  try {
    const result = await fn(c);
    return { result, trips };
  } finally {
    connection.off("readyForQuery", count);
    c.release();
  }
}

const settings = (role: string, session = "") => JSON.stringify([["role", role], ["hourglass.session_id", session]]);

describe("a GraphQL request's transaction start", () => {
  it("sends begin with the settings in one round trip; the settings hold for the transaction only", async () => {
    const visitor = db.run.roles.visitor;
    const { result, trips } = await roundTrips(async (c) => {
      await c.query({ text: ADAPTOR_BEGIN });
      await c.query({ text: ADAPTOR_SETTINGS, values: [settings(visitor, "00000000-0000-0000-0000-000000000001")] });
      const inside = (await c.query("select current_user as role, current_setting('hourglass.session_id') as session")).rows[0];
      await c.query({ text: "commit" });
      const after = (await c.query("select current_user as role")).rows[0];
      return { inside, after };
    });
    expect(result.inside).toEqual({ role: visitor, session: "00000000-0000-0000-0000-000000000001" });
    expect(result.after).toEqual({ role: db.run.roles.authenticator });
    // begin + settings, the query, commit, the check after: four (five without coalescing).
    expect(trips).toBe(4);
  });

  it("escapes the settings: quotes, backslashes and replacement patterns in a value arrive as written", async () => {
    // `$'` `$&` `$$` would be patterns if the literal were put in with String.replace.
    const value = "it's \\ 'quoted' $' $& $$ $1 ') el; select pg_sleep(5); --";
    const { result } = await roundTrips(async (c) => {
      await c.query({ text: ADAPTOR_BEGIN });
      await c.query({ text: ADAPTOR_SETTINGS, values: [JSON.stringify([["hourglass.client_address", value]])] });
      const { rows } = await c.query("select current_setting('hourglass.client_address') as v");
      await c.query({ text: "rollback" });
      return rows[0].v;
    });
    expect(result).toBe(value);
  });

  it("answers callback-style calls too, never synchronously", async () => {
    const c = await pool.connect();
    try {
      let sync = true;
      const answered = new Promise<string>((resolve, reject) =>
        (c.query as unknown as (text: string, cb: (err: Error | null, r: { command: string }) => void) => void)(ADAPTOR_BEGIN, (err, r) =>
          err ? reject(err) : resolve(`${r.command} ${sync ? "sync" : "async"}`)),
      );
      sync = false;
      expect(await answered).toBe("BEGIN async");
      const { rows } = await c.query("select 1 as one");
      expect(rows).toEqual([{ one: 1 }]);
      await c.query("rollback");
    } finally {
      c.release();
    }
  });

  it("a failing setting fails the statement and the rollback leaves the connection usable", async () => {
    const { result } = await roundTrips(async (c) => {
      await c.query({ text: ADAPTOR_BEGIN });
      const err = await c.query({ text: ADAPTOR_SETTINGS, values: [settings("no_such_role_anywhere")] }).then(() => null, (e: Error) => e.message);
      await c.query({ text: "rollback" });
      const { rows } = await c.query("select current_user as role, pg_current_xact_id_if_assigned() is null as idle");
      return { err, after: rows[0] };
    });
    expect(result.err).toMatch(/no_such_role_anywhere/);
    expect(result.after).toEqual({ role: db.run.roles.authenticator, idle: true });
  });

  it("any other statement after begin runs inside the transaction; begin then commit alone sends nothing", async () => {
    await db.pool.query(`create table if not exists public.coalesce_probe (n int);
      grant usage on schema public to ${db.run.roles.authenticator}; grant select, insert on public.coalesce_probe to ${db.run.roles.authenticator}`);
    const { trips } = await roundTrips(async (c) => {
      await c.query("begin");
      await c.query("insert into public.coalesce_probe values (1)");
      await c.query("rollback");
      await c.query("begin");
      await c.query("commit");
    });
    expect((await pool.query("select count(*)::int as n from public.coalesce_probe")).rows[0].n).toBe(0);
    expect(trips).toBe(3);
  });

  it("a client released with a begin held back starts its next checkout outside any transaction", async () => {
    await db.pool.query(`create table if not exists public.coalesce_probe (n int);
      grant usage on schema public to ${db.run.roles.authenticator}; grant select, insert on public.coalesce_probe to ${db.run.roles.authenticator}`);
    const single = new pg.Pool({ connectionString: db.authUrl, max: 1 });
    coalesceTransactionStart(single);
    try {
      const first = await single.connect();
      await first.query({ text: ADAPTOR_BEGIN });
      first.release();
      const again = await single.connect();
      expect(again).toBe(first);
      await again.query("insert into public.coalesce_probe values (42)");
      again.release();
      // Committed on its own: another session sees it.
      expect((await db.pool.query("select count(*)::int as n from public.coalesce_probe where n = 42")).rows[0].n).toBe(1);
    } finally {
      await single.end();
    }
  });

  it("matches the statements PostGraphile's pg adaptor sends", () => {
    // If an upgrade changes them, nothing breaks (they are sent as they are) but the saving is lost.
    const postgraphile = path.resolve(import.meta.dirname, "../../node_modules/postgraphile");
    const file = [path.join(postgraphile, "node_modules"), path.join(postgraphile, "..")]
      .map((dir) => path.join(dir, "@dataplan/pg/dist/adaptors/pg.js"))
      .find((f) => fs.existsSync(f));
    expect(file).toBeDefined();
    const adaptor = fs.readFileSync(file!, "utf8");
    expect(adaptor).toContain(`text: alreadyInTransaction ? "savepoint tx" : "${ADAPTOR_BEGIN}"`);
    expect(adaptor).toContain(`text: "${ADAPTOR_SETTINGS}"`);
  });
});
