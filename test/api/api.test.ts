import fs from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GraphQLError } from "postgraphile/graphql";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadErrorCodes, makeMaskError } from "../../src/api/errors.ts";
import { printSchemaSDL, SCHEMA_FILE } from "../../src/api/schema.ts";
import { apiBackendsWaitingOnLock, createTestDb, createUser, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { graphql } from "../helpers/graphql.ts";
import { startPgProxy } from "../helpers/proxy.ts";

let db: TestDb;
let api: ApiHandle;
let workerRunning: boolean | null = null;

beforeAll(async () => {
  db = await createTestDb();
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => workerRunning } });
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
});

async function gql(query: string, token?: string, variables?: Record<string, unknown>) {
  const res = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as { data?: any; errors?: any[] } };
}

describe("bearer sessions", () => {
  it("a request without a token is anonymous", async () => {
    const r = await gql("{ currentUser { email } }");
    expect(r.status).toBe(200);
    expect(r.body.data.currentUser).toBeNull();
  });

  it("a valid token makes the request run as that user", async () => {
    const u = await createUser(db);
    const { token } = await signIn(db, u.id);
    const r = await gql("{ currentUser { rowId email isAdmin } }", token);
    expect(r.body.data.currentUser).toEqual({ rowId: u.id, email: u.email, isAdmin: false });
  });

  it.each([
    ["an expired token", "expired"],
    ["a well-formed token no session has", "unknown"],
    ["garbage", "garbage"],
  ])("%s gets HTTP 401 with a generic message", async (_label, kind) => {
    const u = await createUser(db);
    const token =
      kind === "expired" ? (await signIn(db, u.id, "-1 second")).token : kind === "unknown" ? "A".repeat(43) : "not a token!";
    const r = await gql("{ currentUser { email } }", token);
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ errors: [{ message: "Invalid or expired session token.", extensions: { code: "UNAUTHENTICATED" } }] });
  });
});

describe("errors", () => {
  it("a constraint violation reaches the client with a safe message and a code", async () => {
    const u = await createUser(db);
    const { token } = await signIn(db, u.id);
    const r = await gql(
      "mutation($id: BigInt!, $name: String!) { updateUserByRowId(input: {rowId: $id, userPatch: {name: $name}}) { user { name } } }",
      token,
      { id: u.id, name: "x".repeat(201) },
    );
    expect(r.body.errors).toHaveLength(1);
    expect(r.body.errors![0].message).toBe("A value is not allowed.");
    expect(r.body.errors![0].extensions).toEqual({ code: "CHECK_VIOLATION", constraint: "users_name_check" });
    expect(JSON.stringify(r.body)).not.toMatch(/app_public|stack|at /);
  });

  it("the project's own codes pass through; anything else is masked with a reference", async () => {
    const mask = makeMaskError(loadErrorCodes(), testLog);
    const pgError = async (sql: string) => db.pool.query(sql).then(() => { throw new Error("expected a failure"); }, (e: Error) => e);
    const wrap = (e: Error) => new GraphQLError(e.message, { originalError: e, path: ["field"] });

    const coded = mask(wrap(await pgError("select app_private.add_job('nope')")));
    expect(coded.message).toBe("Unknown task nope");
    expect(coded.extensions).toEqual({ code: "TASKU" });
    expect(coded.path).toEqual(["field"]);

    const internal = mask(wrap(await pgError("select 1/0")));
    expect(internal.message).toMatch(/^An unexpected error occurred \(reference [0-9a-f]{12}\)\.$/);
    expect(internal.extensions.code).toBe("INTERNAL_ERROR");
    expect(internal.message).not.toMatch(/division/);

    const plain = mask(wrap(new Error("connect ECONNREFUSED 127.0.0.1:1")));
    expect(plain.message).not.toMatch(/ECONNREFUSED/);
  });
});

describe("schema", () => {
  it("exposes app_public only: nothing from graphile_worker or app_private", async () => {
    const sdl = await fs.readFile(SCHEMA_FILE, "utf8");
    expect(sdl).not.toMatch(/graphile_?worker|GraphileWorker|jobSpec|JobSpec|app_?private|tokenHash|createSession|addJob/i);
    expect(sdl).toMatch(/type JobRun /);
  });

  it("schema.graphql is up to date (run `npm run schema:export` after changing the database)", async () => {
    const committed = await fs.readFile(SCHEMA_FILE, "utf8");
    expect(await printSchemaSDL(api.pool, db.run.roles.visitor)).toBe(committed);
  });
});

describe("/healthz", () => {
  it("reports the database and the in-process worker", async () => {
    workerRunning = true;
    let r = await fetch(`${api.url}/healthz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({
      status: "ok",
      database: "ok",
      worker: "running",
      // No worker heartbeats in this database: the cluster's scheduler is down, this process is fine.
      jobs: { queued: 0, scheduled: 0, running: 0, failed: 0, oldestDueSeconds: null, failuresLast24h: 0, workersAlive: 0, schedulerHealthy: false },
    });
    workerRunning = false;
    r = await fetch(`${api.url}/healthz`);
    expect(r.status).toBe(503);
    expect(await r.json()).toMatchObject({ status: "unhealthy", worker: "stopped" });
    workerRunning = null;
    r = await fetch(`${api.url}/healthz`);
    expect(await r.json()).toMatchObject({ status: "ok", worker: "not in this process" });
  });
});

describe("/healthz against a slow database", () => {
  it("gives up after two seconds and so does its query; concurrent probes share one query", async () => {
    // A DBA's transaction holds a lock the overview's query waits for.
    const locker = await db.pool.connect();
    const activeProbes = async () =>
      (await db.pool.query("select count(*)::int as n from pg_stat_activity where query like '%app_hidden.job_health()%' and state = 'active' and pid <> pg_backend_pid()")).rows[0].n as number;
    try {
      await locker.query("begin");
      await locker.query("lock table app_public.worker_processes in access exclusive mode");
      const probes = Array.from({ length: 5 }, () => fetch(`${api.url}/healthz`));
      await new Promise((r) => setTimeout(r, 500));
      expect(await activeProbes()).toBe(1);
      const answers = await Promise.all(probes);
      expect(answers.map((a) => a.status)).toEqual([503, 503, 503, 503, 503]);
      expect(await answers[0]!.json()).toMatchObject({ status: "unhealthy", database: "unreachable", jobs: null });
      // Cancelled by its own statement_timeout: nothing left waiting on the lock, holding a connection.
      const deadline = Date.now() + 5000;
      while ((await activeProbes()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await activeProbes()).toBe(0);
    } finally {
      await locker.query("rollback");
      locker.release();
    }
    expect((await fetch(`${api.url}/healthz`)).status).not.toBe(503);
  });
});

describe("API_POOL_SIZE", () => {
  it("bounds the API's connections: requests beyond it wait for one and are all answered", async () => {
    const { id } = await createUser(db);
    const { token } = await signIn(db, id);
    const smallApi = await startApi({ authUrl: db.authUrl, config: testConfig(db, { API_POOL_SIZE: "3" }), log: testLog, health: { workerRunning: () => null } });
    const locker = await db.pool.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table app_public.users in access exclusive mode");
      const requests = Array.from({ length: 8 }, () => graphql(smallApi, token, "{ currentUser { rowId } }"));
      const deadline = Date.now() + 5000;
      while ((await apiBackendsWaitingOnLock(db)) < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      // Time for the other five to reach the pool (with its old fixed size of 20, all 8 waited on the lock).
      await new Promise((r) => setTimeout(r, 500));
      expect(await apiBackendsWaitingOnLock(db)).toBe(3);
      await locker.query("rollback");
      const answers = await Promise.all(requests);
      expect(answers.map((a) => a.data?.currentUser?.rowId)).toEqual(Array(8).fill(id));
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await smallApi.stop();
    }
  });
});

describe("the database out of reach", () => {
  const ask = (on: ApiHandle, token: string) => graphql(on, token, "{ currentUser { rowId } }");

  it("answers UNAVAILABLE while the database cannot be reached, and serves again once it can", async () => {
    const { id } = await createUser(db);
    const { token } = await signIn(db, id);
    const proxy = await startPgProxy(new URL(db.authUrl));
    const far = await startApi({ authUrl: proxy.url(db.authUrl), config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
    try {
      expect((await ask(far, token)).data?.currentUser?.rowId).toBe(id);
      await proxy.refuse();
      // Anonymous, so that the request itself meets the outage (a bearer token's lookup would answer
      // 503 before it: the sessions' listener is down too, so nothing is remembered).
      const refused = await fetch(`${far.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ query: "{ currentUser { rowId } }" }),
      });
      expect(refused.status).toBe(200);
      const body = (await refused.json()) as { errors?: { message: string; extensions?: { code?: string } }[] };
      expect(body.errors?.map((e) => [e.extensions?.code, e.message])).toEqual([["UNAVAILABLE", "The service is temporarily unavailable: try again shortly."]]);
      const withToken = await fetch(`${far.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: "{ currentUser { rowId } }" }),
      });
      expect([withToken.status, ((await withToken.json()) as typeof body).errors?.[0]?.extensions?.code]).toEqual([503, "UNAVAILABLE"]);
      await proxy.accept();
      expect((await ask(far, token)).data?.currentUser?.rowId).toBe(id);
    } finally {
      await far.stop();
      await proxy.close();
    }
  });

  it("answers UNAVAILABLE when no connection is free in time, instead of waiting for ever", async () => {
    const { id } = await createUser(db);
    const { token } = await signIn(db, id);
    const small = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { API_POOL_SIZE: "2" }),
      log: testLog,
      health: { workerRunning: () => null },
      connectTimeoutMs: 500,
    });
    const locker = await db.pool.connect();
    try {
      await ask(small, token); // its session is remembered: the next requests need no lookup
      await locker.query("begin");
      await locker.query("lock table app_public.users in access exclusive mode");
      // Two requests wait on the lock, holding both connections.
      const held = [ask(small, token), ask(small, token)];
      const deadline = Date.now() + 5000;
      while ((await apiBackendsWaitingOnLock(db)) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await apiBackendsWaitingOnLock(db)).toBe(2);
      const third = await ask(small, token);
      expect(third.errors?.map((e) => e.extensions?.code)).toEqual(["UNAVAILABLE"]);
      await locker.query("rollback");
      expect((await Promise.all(held)).map((r) => r.data?.currentUser?.rowId)).toEqual([id, id]);
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await small.stop();
    }
  });
});

describe("per-request statement_timeout", () => {
  it("cancels a GraphQL request that runs longer than STATEMENT_TIMEOUT_MS, with a safe error", async () => {
    // A slow function exists only in this file's own database, created before this API starts.
    await db.pool.query(
      `create function app_public.slow_answer() returns integer language sql stable as $$ select 42 from pg_sleep(2) $$;
       grant execute on function app_public.slow_answer() to ${db.run.roles.visitor}`,
    );
    const slowApi = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { STATEMENT_TIMEOUT_MS: "200" }),
      log: testLog,
      health: { workerRunning: () => null },
    });
    try {
      const res = await fetch(`${slowApi.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ query: "{ slowAnswer }" }),
      });
      const body = (await res.json()) as { errors?: { message: string; extensions: unknown }[] };
      expect(body.errors?.[0]).toMatchObject({
        message: "The request took too long and was cancelled.",
        extensions: { code: "STATEMENT_TIMEOUT" },
      });
    } finally {
      await slowApi.stop();
      await db.pool.query("drop function app_public.slow_answer()");
    }
  });
});
