// The API remembers a token's session between requests (src/api/sessions.ts) and must still refuse
// it as soon as the session ends: logout, a DBA's delete, the sweep, expiry, and while it cannot
// hear Postgres's announcements.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { SessionCache, tokenDigest } from "../../src/api/sessions.ts";
import { createTestDb, createUser, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let api: ApiHandle;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

async function me(handle: ApiHandle, token: string) {
  const res = await fetch(`${handle.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: "{ currentUser { email } }" }),
  });
  const body = (await res.json()) as { data?: { currentUser: { email: string } | null } };
  return { status: res.status, email: body.data?.currentUser?.email ?? null };
}

/** A signed-in user whose session this API process has looked up once and now remembers. */
async function remembered(handle: ApiHandle, lifetime?: string) {
  const user = await createUser(db);
  const { token, sessionId } = await signIn(db, user.id, lifetime);
  expect(await me(handle, token)).toEqual({ status: 200, email: user.email });
  const hits = handle.sessions.hits;
  expect(await me(handle, token)).toEqual({ status: 200, email: user.email });
  expect(handle.sessions.hits).toBe(hits + 1);
  return { user, token, sessionId };
}

beforeAll(async () => {
  db = await createTestDb();
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
  await until("the session listener listens", () => api.sessions.listening);
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
});

describe("the session cache", () => {
  it("looks a token up once, then answers from memory", async () => {
    const user = await createUser(db);
    const { token } = await signIn(db, user.id);
    const [hits, misses] = [api.sessions.hits, api.sessions.misses];
    for (let i = 0; i < 5; i++) expect(await me(api, token)).toEqual({ status: 200, email: user.email });
    expect([api.sessions.hits - hits, api.sessions.misses - misses]).toEqual([4, 1]);
  });

  it("never remembers a token that has no live session", async () => {
    const misses = api.sessions.misses;
    const unknown = "B".repeat(43);
    for (let i = 0; i < 3; i++) expect((await me(api, unknown)).status).toBe(401);
    expect(api.sessions.misses - misses).toBe(3);
  });

  it("refuses a logged-out token on the very next request", async () => {
    const { token } = await remembered(api);
    const res = await fetch(`${api.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: "mutation { logout(input: {}) { result } }" }),
    });
    expect(((await res.json()) as any).data.logout.result).toBe(true);
    expect((await me(api, token)).status).toBe(401);
  });

  it("refuses a session a DBA deleted in SQL, and 60 deleted in one statement, once Postgres announces it", async () => {
    const one = await remembered(api);
    const many = await Promise.all(Array.from({ length: 60 }, async () => signIn(db, one.user.id)));
    for (const s of many.slice(0, 3)) expect((await me(api, s.token)).status).toBe(200);
    const other = await remembered(api);

    await db.pool.query("delete from app_private.sessions where id = $1", [one.sessionId]);
    // The announcement arrives on the listener's connection a moment after the commit.
    await until("the deleted session is refused", async () => (await me(api, one.token)).status === 401, 2000);
    expect(await me(api, other.token)).toEqual({ status: 200, email: other.user.email });

    await db.pool.query("delete from app_private.sessions where id = any ($1::uuid[])", [many.map((s) => s.sessionId)]);
    await until("the 60 deleted sessions are refused", async () => (await me(api, many[0]!.token)).status === 401, 2000);
    for (const s of many.slice(1, 3)) expect((await me(api, s.token)).status).toBe(401);
  });

  it("refuses a session once it expires, though it was remembered for longer", async () => {
    const { token } = await remembered(api, "1.5 seconds");
    await until("the expired session is refused", async () => (await me(api, token)).status === 401, 4000);
  });

  it("remembers nothing while its LISTEN connection is down, and listens again by itself", async () => {
    // Its listener waits 3 s before it reconnects: the requests below take well under that.
    const slow = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null }, sessionListenerRetryMs: 3000 });
    try {
      await until("the session listener listens", () => slow.sessions.listening);
      const kept = await remembered(slow);
      const { rows } = await db.pool.query(
        "select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = 'hourglass-api-sessions' and datname = current_database()",
      );
      expect(rows.length).toBeGreaterThanOrEqual(2);
      await until("the cache notices", () => !slow.sessions.listening);
      // Deleted while nobody listens: the announcement is lost, so nothing may be answered from memory.
      await db.pool.query("delete from app_private.sessions where id = $1", [kept.sessionId]);
      expect((await me(slow, kept.token)).status).toBe(401);
      const user = await createUser(db);
      const { token } = await signIn(db, user.id);
      const hits = slow.sessions.hits;
      expect(await me(slow, token)).toEqual({ status: 200, email: user.email });
      expect(await me(slow, token)).toEqual({ status: 200, email: user.email });
      expect(slow.sessions.hits).toBe(hits);
      expect(slow.sessions.listening).toBe(false);

      await until("it listens again", () => slow.sessions.listening, 10_000);
      await remembered(slow);
    } finally {
      await slow.stop();
    }
    // The other API process listens again too.
    await until("the main API listens again", () => api.sessions.listening, 10_000);
  });

  it("counts a listener that stops answering as lost, though its connection never reports an error", async () => {
    // A firewall that silently drops an idle connection, played by freezing the listener's backend.
    const cache = new SessionCache(api.pool, { listenUrl: db.authUrl, ttlMs: 60_000, log: testLog, retryMs: 60_000, probeMs: 200 });
    cache.start();
    let frozen: number | null = null;
    try {
      await until("it listens", () => cache.listening);
      const { rows } = await db.pool.query<{ pid: number }>(
        "select pid from pg_stat_activity where application_name = 'hourglass-api-sessions' and datname = current_database() order by backend_start desc limit 1",
      );
      frozen = rows[0]!.pid;
      process.kill(frozen, "SIGSTOP");
      // The probe's 5 s without an answer, after at most 200 ms.
      await until("the silent listener is counted lost", () => !cache.listening, 10_000);
    } finally {
      if (frozen !== null) process.kill(frozen, "SIGCONT");
      await cache.stop();
    }
  });

  it("with SESSION_CACHE_MS=0 looks every request's session up", async () => {
    const plain = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { SESSION_CACHE_MS: "0" }),
      log: testLog,
      health: { workerRunning: () => null },
    });
    try {
      const user = await createUser(db);
      const { token } = await signIn(db, user.id);
      for (let i = 0; i < 3; i++) expect(await me(plain, token)).toEqual({ status: 200, email: user.email });
      expect([plain.sessions.hits, plain.sessions.misses, plain.sessions.listening]).toEqual([0, 3, false]);
    } finally {
      await plain.stop();
    }
  });

  it("announces the digests of sessions that end early, and nothing for the sweep of expired ones", async () => {
    const listener = await db.pool.connect();
    const heard: string[] = [];
    listener.on("notification", (n) => heard.push(n.payload ?? ""));
    try {
      await listener.query('listen "hourglass:sessions_ended"');
      const user = await createUser(db);
      const { token: expired } = await signIn(db, user.id, "-1 second");
      const { token: live } = await signIn(db, user.id);
      await db.pool.query("delete from app_private.sessions where token_hash = sha256(convert_to($1, 'UTF8'))", [expired]);
      await db.pool.query("delete from app_private.sessions where token_hash = sha256(convert_to($1, 'UTF8'))", [live]);
      await until("the live session's end is announced", () => heard.length > 0);
      // Announcements arrive in commit order: had the first delete announced anything, it would be first.
      expect(heard).toEqual([tokenDigest(live)]);
    } finally {
      await listener.query("unlisten *");
      listener.release();
    }
  });
});
