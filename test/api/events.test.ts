// Live job events: a real API process's jobEvents subscription over websockets (graphql-ws), fed by
// Postgres NOTIFY from triggers. A job enqueued by a DBA's SQL UPDATE reaches a subscribed client
// within a second; runs, crash recovery's abandoned marks and schedule changes arrive too; the
// filters hold; a rolled-back change publishes nothing; only admins may subscribe, and a
// subscription ends once its session is gone.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "graphql-ws";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import type net from "node:net";
import pg from "pg";
import WebSocket from "ws";
import { HistoryWriter } from "../../src/worker/history.ts";
import { z } from "zod";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { JobEventListeners, type EventLimits } from "../../src/api/events.ts";
import { loadTasks, syncCatalogue } from "../../src/worker/catalogue.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { startPgProxy } from "../helpers/proxy.ts";
import { apiBackendsWaitingOnLock, asUser, createTestDb, createUser, drainJobs, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { createCompany, createWorker, draftOffer } from "../helpers/offers.ts";

let db: TestDb;
let api: ApiHandle;
let admin: { sessionId: string; token: string };
let user: { sessionId: string; token: string };
const clients: Client[] = [];

const flaky = resolveTask("t_events", defineTask({
  description: "succeeds or fails when asked to (test)",
  payload: z.object({ fail: z.boolean() }),
  maxAttempts: 1,
  async run({ fail }) {
    if (fail) throw new Error("asked to fail");
    return { ok: true };
  },
}));

beforeAll(async () => {
  db = await createTestDb();
  await syncCatalogue(db.pool, [flaky]);
  await db.pool.query(`select app_private.sync_schedules('[{"id": "t_events_minutely", "pattern": "* * * * *", "task": "t_events", "options": {}, "payload": {"fail": false}}]')`);
  api = await startApi({
    authUrl: db.authUrl,
    config: testConfig(db),
    log: testLog,
    health: { workerRunning: () => null },
    tasks: [...(await loadTasks()), flaky],
    eventLimits: { recheckMs: 200, maxPending: 1000 },
  });
  admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
  user = await signIn(db, (await createUser(db)).id);
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
  await api?.stop();
  await db?.drop();
});

interface Event {
  kind: string;
  at: string;
  jobId: string | null;
  taskIdentifier: string | null;
  jobKey: string | null;
  attempt: number | null;
  outcome: string | null;
  scheduleId: string | null;
  reason: string | null;
  count: number | null;
  action: string | null;
  target: string | null;
}

interface Subscription {
  events: (Event & { receivedAt: number })[];
  errors: { message: string; extensions?: { code?: string } }[];
  ended: Promise<void>;
  /** Resolves with the first event (from now on) that matches. */
  next(match: (e: Event) => boolean, timeoutMs?: number): Promise<Event & { receivedAt: number }>;
  stop(): void;
}

/** Subscribes and resolves once the server has the subscription (its LISTEN is in place). */
async function subscribe(token: string | null, args: { tasks?: string[]; keyPrefix?: string } = {}, on: ApiHandle = api): Promise<Subscription> {
  const client = createClient({
    url: `${on.url.replace(/^http/, "ws")}/graphql`,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: false,
  });
  clients.push(client);
  const events: Subscription["events"] = [];
  const errors: Subscription["errors"] = [];
  const waiters = new Set<{ match: (e: Event) => boolean; resolve: (e: Event & { receivedAt: number }) => void }>();
  let endedResolve!: () => void;
  const ended = new Promise<void>((r) => (endedResolve = r));
  const stop = client.subscribe<{ jobEvents: Event }>(
    {
      query: `subscription ($tasks: [String!], $keyPrefix: String) {
        jobEvents(tasks: $tasks, keyPrefix: $keyPrefix) { kind at jobId taskIdentifier jobKey attempt outcome scheduleId reason count action target }
      }`,
      variables: args,
    },
    {
      next(result) {
        if (result.errors) errors.push(...(result.errors as Subscription["errors"]));
        if (!result.data) return;
        const e = { ...result.data.jobEvents, receivedAt: Date.now() };
        events.push(e);
        if (e.kind === "probe") return;
        for (const w of waiters) if (w.match(e)) (waiters.delete(w), w.resolve(e));
      },
      error(err) {
        errors.push(...(Array.isArray(err) ? err : [{ message: String((err as Error).message ?? err) }]));
        endedResolve();
      },
      complete: () => endedResolve(),
    },
  );
  // Live once the server has run the subscription (its LISTEN in place): publish a probe event
  // that passes the filter until one arrives (or the subscription is refused).
  const probe = { kind: "probe", at: new Date().toISOString(), taskIdentifier: args.tasks?.[0], jobKey: `${args.keyPrefix ?? ""}probe` };
  await waitFor(async () => {
    await db.pool.query("select pg_notify('hourglass:job_events', $1)", [JSON.stringify([probe])]);
    await new Promise((r) => setTimeout(r, 50));
    return events.some((e) => e.kind === "probe") || errors.length > 0;
  });
  events.splice(0, events.length, ...events.filter((e) => e.kind !== "probe"));
  return {
    events,
    errors,
    ended,
    stop,
    next: (match, timeoutMs = 5000) => {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { match, resolve };
        waiters.add(w);
        setTimeout(() => (waiters.delete(w), reject(new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(events)}`))), timeoutMs);
      });
    },
  };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** An API that reaches Postgres through a proxy (test/helpers/proxy.ts), probing its LISTEN every second. */
async function apiThroughProxy(limits: EventLimits = {}) {
  const proxy = await startPgProxy(new URL(db.authUrl));
  const api = await startApi({
    authUrl: proxy.url(db.authUrl),
    config: testConfig(db),
    log: testLog,
    health: { workerRunning: () => null },
    eventLimits: { recheckMs: 200, probeMs: 1000, ...limits },
  });
  return { proxy, api };
}

/** Notifications on the events channel seen by a plain LISTEN connection (as a DBA in psql). */
async function rawListener() {
  const client = new pg.Client({ connectionString: db.ownerUrl });
  await client.connect();
  const payloads: string[] = [];
  client.on("notification", (n) => payloads.push(n.payload ?? ""));
  await client.query('listen "hourglass:job_events"');
  return { payloads, client, end: () => client.end() };
}
const listenerRows = async () => (await db.pool.query("select id from app_private.job_event_listeners where expires_at > now()")).rows.map((r) => r.id as string);

describe("publishing only while someone watches", () => {
  it("publishes nothing with no subscription, while a subscription is live, and not after it ends", async () => {
    const raw = await rawListener();
    try {
      expect(await listenerRows()).toEqual([]);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'watch:before')");
      await new Promise((r) => setTimeout(r, 300));
      expect(raw.payloads).toEqual([]);

      const sub = await subscribe(admin.token, { keyPrefix: "watch:" });
      expect(await listenerRows()).toEqual([expect.stringMatching(/^api:/)]);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'watch:during')");
      await sub.next((e) => e.jobKey === "watch:during");
      sub.stop();
      await waitFor(async () => (await listenerRows()).length === 0);
      const seen = raw.payloads.length;
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'watch:after')");
      await new Promise((r) => setTimeout(r, 300));
      expect(raw.payloads.length).toBe(seen);

      // A DBA watching in psql.
      await db.pool.query("select app_private.watch_job_events(interval '1 minute')");
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'watch:psql')");
      await waitFor(async () => raw.payloads.some((p) => p.includes("watch:psql")));
      await db.pool.query("delete from app_private.job_event_listeners");
    } finally {
      await raw.end();
      await db.pool.query("select graphile_worker.remove_job(key) from graphile_worker.jobs where key like 'watch:%'");
    }
  });
});

describe("the publishing flag, when it cannot be refreshed", () => {
  // Valid for 6 s, refreshed every second, each refresh given 0.6 s: the subscriptions must end
  // before the row expires (about a second before, by the rule), not silently after.
  const timing = { ttlMs: 6000, refreshMs: 1000, timeoutMs: 600 };

  /** `block` stops refreshes from getting through and returns what lets them through again. */
  async function endsBeforeExpiry(block: (pool: pg.Pool) => Promise<() => Promise<void>>) {
    const pool = new pg.Pool({ connectionString: db.authUrl, max: 2 });
    const listeners = new JobEventListeners(pool, testLog, timing);
    let lostAt: Date | null = null;
    const release = await listeners.acquire(() => {
      void db.pool.query("select clock_timestamp() as t").then(({ rows }) => (lostAt = rows[0].t));
    });
    let unblocked = false;
    const unblockOnce = await block(pool);
    const unblock = async () => {
      if (unblocked) return;
      unblocked = true;
      await unblockOnce();
    };
    try {
      await waitFor(async () => lostAt !== null, 10_000);
      await unblock();
      const { rows } = await db.pool.query("select expires_at from app_private.job_event_listeners where id like 'api:%'");
      expect(rows).toHaveLength(1);
      expect(lostAt!.getTime()).toBeLessThan(rows[0].expires_at.getTime());
    } finally {
      await unblock();
      await release();
      await pool.end();
    }
    expect(await listenerRows()).toEqual([]);
  }

  it("ends the subscriptions while the row is still valid when a refresh is stuck behind a lock", async () => {
    await endsBeforeExpiry(async () => {
      // A DBA's transaction holds a lock that every refresh waits for.
      const locker = await db.pool.connect();
      await locker.query("begin");
      await locker.query("lock table app_private.job_event_listeners in access exclusive mode");
      return async () => {
        await locker.query("rollback");
        locker.release();
      };
    });
  });

  it("and when a refresh waits for a connection of a pool that has none free", async () => {
    await endsBeforeExpiry(async (pool) => {
      const held = [await pool.connect(), await pool.connect()];
      return async () => held.forEach((c) => c.release());
    });
  });
});

describe("jobEvents", () => {
  it("delivers a job enqueued by a SQL UPDATE to a subscribed client within a second", async () => {
    const company = await createCompany(db);
    const worker = await createWorker(db);
    const offerId = await draftOffer(db, company, worker, 3);
    const sub = await subscribe(admin.token, { keyPrefix: `offers:${offerId}:` });

    // A DBA's bulk-style update (owner role, no API): the trigger enqueues the expiry job.
    const committedAt = await (async () => {
      const c = await db.pool.connect();
      try {
        await c.query("begin");
        await c.query("update app_public.offers set status = 'SENT' where id = $1", [offerId]);
        await c.query("commit");
        return Date.now();
      } finally {
        c.release();
      }
    })();
    const event = await sub.next((e) => e.kind === "enqueued");
    expect(event).toMatchObject({ kind: "enqueued", taskIdentifier: "offers__expire", jobKey: `offers:${offerId}:expire` });
    expect(event.jobId).toMatch(/^\d+$/);
    expect(event.receivedAt - committedAt).toBeLessThan(1000);
    // Nothing else of this offer's: the filter held back every other job.
    expect(sub.events.every((e) => e.jobKey?.startsWith(`offers:${offerId}:`))).toBe(true);
  });

  it("streams a run's start and end, filtered by task", async () => {
    const sub = await subscribe(admin.token, { tasks: ["t_events"] });
    await db.pool.query(`select app_private.add_job('send_email', '{}', job_key := 'not-for-this-filter');
      select app_private.add_job('t_events', '{"fail": false}', job_key := 'events:ok');
      select app_private.add_job('t_events', '{"fail": true}', job_key := 'events:bad', max_attempts := 1)`);
    await db.pool.query("select graphile_worker.remove_job('not-for-this-filter')");
    await drainJobs(db, [flaky]);
    const ok = await sub.next((e) => e.kind === "succeeded" && e.jobKey === "events:ok");
    const bad = await sub.next((e) => e.kind === "failed" && e.jobKey === "events:bad");
    expect(ok).toMatchObject({ taskIdentifier: "t_events", attempt: 1, outcome: "succeeded" });
    expect(bad).toMatchObject({ taskIdentifier: "t_events", attempt: 1, outcome: "failed_permanently" });
    const kinds = (key: string) => sub.events.filter((e) => e.jobKey === key).map((e) => e.kind);
    expect(kinds("events:ok")).toEqual(["enqueued", "started", "succeeded"]);
    expect(kinds("events:bad")).toEqual(["enqueued", "started", "failed"]);
    expect(sub.events.filter((e) => e.taskIdentifier !== "t_events")).toEqual([]);
  });

  it("streams crash recovery's abandoned marks and schedule pauses, with the skipped ticks' schedule", async () => {
    const sub = await subscribe(admin.token, { tasks: ["t_events"] });
    // A run left `running` by a worker that died; recovery marks it abandoned.
    await db.pool.query(`insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, outcome, job_key)
      values (gen_random_uuid(), 999999, 't_events', 1, 1, 'dead-worker', now(), 'running', 'events:orphan')`);
    await db.pool.query("update app_public.job_runs set outcome = 'abandoned', finished_at = now() where job_key = 'events:orphan'");
    expect(await sub.next((e) => e.kind === "abandoned")).toMatchObject({ jobKey: "events:orphan", outcome: "abandoned" });

    const c = await db.pool.connect();
    try {
      await c.query("begin");
      await c.query("select set_config('hourglass.session_id', $1, true)", [admin.sessionId]);
      await c.query("select app_public.pause_schedule('t_events_minutely', 'deploying')");
      await c.query("commit");
    } finally {
      c.release();
    }
    expect(await sub.next((e) => e.kind === "schedule_paused")).toMatchObject({ scheduleId: "t_events_minutely", taskIdentifier: "t_events", reason: "deploying" });
    // A paused tick, as a worker records it (through its history writer): skipped, with the entry's key.
    const history = new HistoryWriter(db.pool, { flushDelayMs: 5, log: testLog });
    const id = randomUUID();
    history.start({
      id, jobId: "77", task: "t_events", queueName: null, jobKey: "cron:t_events_minutely", attempt: 1, maxAttempts: 1,
      payload: {}, workerId: "test:events", runAt: Date.now(), startedAt: Date.now(), durationMs: null, outcome: "running", error: null, result: null,
    });
    history.finish(id, "skipped", null, { skipped: "schedule t_events_minutely is paused" });
    await history.close();
    expect(await sub.next((e) => e.kind === "skipped")).toMatchObject({ scheduleId: "t_events_minutely" });
    expect(sub.events.filter((e) => e.jobKey === "cron:t_events_minutely").map((e) => e.kind)).toEqual(["skipped"]);
  });

  it("publishes nothing for a rolled-back change", async () => {
    const sub = await subscribe(admin.token, { keyPrefix: "rollback:" });
    const c = await db.pool.connect();
    try {
      await c.query("begin");
      await c.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'rollback:1')");
      await c.query("rollback");
      await c.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'rollback:2')");
    } finally {
      c.release();
    }
    await sub.next((e) => e.jobKey === "rollback:2");
    expect(sub.events.map((e) => e.jobKey)).toEqual(["rollback:2"]);
    await db.pool.query("select graphile_worker.remove_job('rollback:2')");
  });

  it("splits a large batch across notifications and loses none of it", async () => {
    const sub = await subscribe(admin.token, { keyPrefix: "bulk:" });
    // 300 jobs with 400-character keys in one statement: about 150 kB of events.
    await db.pool.query(`select app_private.add_jobs(array(
      select row('t_events', '{"fail": false}'::json, null, null, null, 'bulk:' || g || ':' || repeat('x', 400), null, null)::graphile_worker.job_spec
      from generate_series(1, 300) g))`);
    await waitFor(async () => sub.events.length >= 300);
    expect(new Set(sub.events.map((e) => e.jobKey)).size).toBe(300);
    await db.pool.query("select graphile_worker.remove_job(key) from graphile_worker.jobs where key like 'bulk:%'");
  });

  it("sends one overflow event, past any filter, for a statement that enqueues more than 10,000 jobs", async () => {
    const sub = await subscribe(admin.token, { tasks: ["no_such_task"] });
    await db.pool.query(`select app_private.add_jobs(array(
      select row('t_events', '{"fail": false}'::json, null, null, null, 'flood:' || g, null, null)::graphile_worker.job_spec
      from generate_series(1, 10001) g))`);
    expect(await sub.next((e) => e.kind === "overflow")).toMatchObject({ kind: "overflow", count: 10001 });
    expect(sub.events.map((e) => e.kind)).toEqual(["overflow"]);
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where key like 'flood:%'))");
  });

  it("keeps every notification under NOTIFY's limit, whatever the keys: long multibyte crontab keys", async () => {
    const sub = await subscribe(admin.token, { keyPrefix: "cron:wide" });
    // 512-character keys of 3- and 4-byte characters, among short ones, in one statement.
    await db.pool.query(`select app_private.add_jobs(array(
      select row('t_events', '{"fail": false}'::json, null, null, null,
                 case when g % 3 = 0 then left('cron:wide' || g || repeat(case when g % 2 = 0 then '字' else '😀' end, 512), 512)
                      else 'cron:wide:short:' || g end, null, null)::graphile_worker.job_spec
      from generate_series(1, 80) g))`);
    await waitFor(async () => sub.events.length >= 80);
    expect(new Set(sub.events.map((e) => e.jobKey)).size).toBe(80);
    // The schedule id is the key's (cron:<id>), derived by the API.
    expect(sub.events.every((e) => e.scheduleId === e.jobKey!.slice(5))).toBe(true);
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where key like 'cron:wide%'))");
  });

  it("publishes a forced stop's abandoned runs once each", async () => {
    const sub = await subscribe(admin.token, { keyPrefix: "forced:" });
    const history = new HistoryWriter(db.pool, { flushDelayMs: 5, log: testLog });
    for (const n of [1, 2]) {
      history.start({
        id: randomUUID(), jobId: String(900 + n), task: "t_events", queueName: null, jobKey: `forced:${n}`, attempt: 1, maxAttempts: 1,
        payload: {}, workerId: "test:events", runAt: Date.now(), startedAt: Date.now(), durationMs: null, outcome: "running", error: null, result: null,
      });
    }
    await history.flush(); // written as running...
    await history.close(); // ...then completed as abandoned by the shutdown
    await sub.next((e) => e.kind === "abandoned" && e.jobKey === "forced:2");
    // A marker after everything above: any duplicate would have arrived before it.
    await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'forced:marker')");
    await sub.next((e) => e.jobKey === "forced:marker");
    const kinds = (key: string) => sub.events.filter((e) => e.jobKey === key).map((e) => e.kind);
    expect([kinds("forced:1"), kinds("forced:2")]).toEqual([["started", "abandoned"], ["started", "abandoned"]]);
    await db.pool.query("select graphile_worker.remove_job('forced:marker')");
  });

  it("streams admins' actions, such as a cancel, which changes the queue without an insert", async () => {
    const sub = await subscribe(admin.token);
    const { rows } = await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'cancel:me', run_at := now() + interval '1 hour')::text as id");
    // Committed, as the API commits a mutation.
    await asUser(db, admin.sessionId, (c) => c.query("select app_public.cancel_job($1, 'not needed')", [rows[0].id]));
    expect(await sub.next((e) => e.kind === "admin_action")).toMatchObject({ action: "cancel_job", target: `job:${rows[0].id}`, reason: "not needed" });
  });

  it("ends every subscription with EVINT when the API loses its LISTEN connection, and listens again for new ones", async () => {
    const subs = [await subscribe(admin.token, { keyPrefix: "lost:" }), await subscribe(admin.token), await subscribe(admin.token, { tasks: ["t_events"] })];
    await db.pool.query(`select pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and query ~* '^(un)?listen '`);
    await Promise.all(subs.map((s) => s.ended));
    expect(subs.map((s) => s.errors.map((e) => e.extensions?.code))).toEqual([["EVINT"], ["EVINT"], ["EVINT"]]);
    const again = await subscribe(admin.token, { keyPrefix: "lost:" });
    await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'lost:after')");
    expect(await again.next((e) => e.jobKey === "lost:after")).toMatchObject({ kind: "enqueued" });
    again.stop();
  });

  it("ends with EVLAG a subscription whose client stops reading, and leaves the others alone", async () => {
    const watcher = await subscribe(admin.token, { keyPrefix: "lag:after" });
    // A graphql-ws client by hand, to stop reading its socket.
    const ws = new WebSocket(`${api.url.replace(/^http/, "ws")}/graphql`, "graphql-transport-ws");
    const messages: { type: string; id?: string; payload?: { data?: { jobEvents?: Event }; errors?: Subscription["errors"] } }[] = [];
    ws.on("message", (d) => messages.push(JSON.parse(String(d))));
    await once(ws, "open");
    try {
      ws.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${admin.token}` } }));
      await waitFor(async () => messages.some((m) => m.type === "connection_ack"));
      ws.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: 'subscription { jobEvents(keyPrefix: "lag:") { kind jobId jobKey } }' } }));
      await waitFor(async () => {
        await db.pool.query("select pg_notify('hourglass:job_events', $1)", [JSON.stringify([{ kind: "probe", at: new Date().toISOString(), jobKey: "lag:probe" }])]);
        await new Promise((r) => setTimeout(r, 50));
        return messages.some((m) => m.type === "next");
      });
      (ws as unknown as { _socket: net.Socket })._socket.pause();
      // 120,000 events (4,000 notifications of 30): more than the sockets' buffers and this API's
      // limit (1,000 here) hold together.
      const flood = 120_000;
      await db.pool.query(
        `select pg_notify('hourglass:job_events', (select json_agg(json_build_object('kind', 'enqueued', 'at', now(), 'jobId', n * 30 + i,
           'jobKey', 'lag:' || repeat('x', 100) || (n * 30 + i)))::text from generate_series(1, 30) i)) from generate_series(0, $1::int / 30 - 1) n`,
        [flood],
      );
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'lag:after')");
      // Another subscription, whose client reads, gets what passes its filter.
      expect(await watcher.next((e) => e.jobKey === "lag:after", 20_000)).toMatchObject({ kind: "enqueued" });
      (ws as unknown as { _socket: net.Socket })._socket.resume();
      await waitFor(async () => messages.some((m) => m.type === "complete" && m.id === "1"), 30_000);
      const events = messages.filter((m) => m.type === "next" && m.payload?.data?.jobEvents);
      const errors = messages.flatMap((m) => (m.type === "next" && m.payload?.errors) || []);
      expect(errors.map((e) => e.extensions?.code)).toEqual(["EVLAG"]);
      expect(events.length).toBeLessThan(flood);
      // What it did get came in order, without a gap, up to where it was ended.
      const ids = events.map((m) => m.payload!.data!.jobEvents!).filter((e) => e.jobKey?.startsWith("lag:x")).map((e) => Number(e.jobId));
      expect(ids).toEqual(ids.map((_, i) => ids[0]! + i));
      expect(watcher.errors).toEqual([]);
    } finally {
      ws.terminate();
      watcher.stop();
      await db.pool.query("select graphile_worker.remove_job('lag:after')");
    }
  });

  it("finds a LISTEN connection that stopped delivering without an error: EVINT, and new subscriptions listen on a new one", async () => {
    // The API reaches Postgres through a proxy that can stop forwarding the LISTEN connection's
    // bytes, both ways, without closing anything: a network cut as the API sees it.
    const { proxy, api: cut } = await apiThroughProxy();
    const ownClients = clients.length;
    try {
      const sub = await subscribe(admin.token, { keyPrefix: "cut:" }, cut);
      // Probes come back while the connection delivers: the subscription stays.
      await new Promise((r) => setTimeout(r, 2500));
      expect(sub.errors).toEqual([]);
      expect(proxy.listening()).toBe(1);
      proxy.cutListeners();
      const cutAt = Date.now();
      await sub.ended;
      expect(sub.errors.map((e) => e.extensions?.code)).toEqual(["EVINT"]);
      // Three probe intervals at most (one sent, judged at the first tick half an interval after), plus slack.
      expect(Date.now() - cutAt).toBeLessThan(8000);
      const again = await subscribe(admin.token, { keyPrefix: "cut:" }, cut);
      expect(proxy.listening()).toBe(2);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'cut:after')");
      expect(await again.next((e) => e.jobKey === "cut:after")).toMatchObject({ kind: "enqueued" });
      again.stop();
    } finally {
      await Promise.all(clients.splice(ownClients).map((c) => c.dispose()));
      await cut.stop();
      await proxy.close();
      await db.pool.query("select graphile_worker.remove_job('cut:after')");
    }
  });

  it("gives its LISTEN connection back to the pool once no one has subscribed for the idle time, and listens again on demand", async () => {
    const idle = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db),
      log: testLog,
      health: { workerRunning: () => null },
      // No probes here: one would hold a second connection for a moment.
      eventLimits: { recheckMs: 200, probeMs: 600_000, idleReleaseMs: 500 },
    });
    const ownClients = clients.length;
    const checkedOut = () => idle.pool.totalCount - idle.pool.idleCount;
    try {
      const sub = await subscribe(admin.token, { keyPrefix: "idle:" }, idle);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'idle:during')");
      await sub.next((e) => e.jobKey === "idle:during");
      await waitFor(async () => checkedOut() === 1); // the LISTEN connection
      sub.stop();
      await waitFor(async () => checkedOut() === 0, 5000);
      const again = await subscribe(admin.token, { keyPrefix: "idle:" }, idle);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'idle:after')");
      expect(await again.next((e) => e.jobKey === "idle:after")).toMatchObject({ kind: "enqueued" });
      again.stop();
    } finally {
      await Promise.all(clients.splice(ownClients).map((c) => c.dispose()));
      await idle.stop();
      await db.pool.query("select graphile_worker.remove_job(key) from graphile_worker.jobs where key like 'idle:%'");
    }
  });

  it("takes a kept LISTEN connection that was cut while idle for dead when its next LISTEN never answers", async () => {
    const { proxy, api: cut } = await apiThroughProxy({ idleReleaseMs: 60_000 });
    const ownClients = clients.length;
    try {
      const first = await subscribe(admin.token, { keyPrefix: "idlecut:" }, cut);
      await waitFor(async () => proxy.listening() === 1);
      first.stop();
      await waitFor(async () => (await listenerRows()).length === 0);
      // The connection is kept (within the idle time) and the network drops it, silently.
      proxy.cutListeners();
      const second = await subscribe(admin.token, { keyPrefix: "idlecut:" }, cut);
      const cutAt = Date.now();
      await second.ended;
      expect(second.errors.map((e) => e.extensions?.code)).toEqual(["EVINT"]);
      expect(Date.now() - cutAt).toBeLessThan(8000);
      const third = await subscribe(admin.token, { keyPrefix: "idlecut:" }, cut);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'idlecut:after')");
      // Delivered: the cut connection, which can deliver nothing, is no longer the one listening.
      expect(await third.next((e) => e.jobKey === "idlecut:after")).toMatchObject({ kind: "enqueued" });
      third.stop();
    } finally {
      await Promise.all(clients.splice(ownClients).map((c) => c.dispose()));
      await cut.stop();
      await proxy.close();
      await db.pool.query("select graphile_worker.remove_job('idlecut:after')");
    }
  });

  it("does not take a LISTEN connection for dead while its probe waits for a connection of a busy pool", async () => {
    // A pool of 2: one connection listens, the other is held by a request waiting on a DBA's lock.
    const busy = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { API_POOL_SIZE: "2" }),
      log: testLog,
      health: { workerRunning: () => null },
      eventLimits: { recheckMs: 200, probeMs: 1000 },
    });
    const ownClients = clients.length;
    const locker = await db.pool.connect();
    try {
      const sub = await subscribe(admin.token, { keyPrefix: "busy:" }, busy);
      await locker.query("begin");
      await locker.query("lock table app_public.users in access exclusive mode");
      const held = fetch(`${busy.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${user.token}` },
        body: JSON.stringify({ query: "{ currentUser { rowId } }" }),
      });
      // The request holds the pool's other connection, waiting on the lock.
      await waitFor(async () => (await apiBackendsWaitingOnLock(db)) === 1);
      // Three probe intervals with no connection to send a probe on.
      await new Promise((r) => setTimeout(r, 3500));
      await locker.query("rollback");
      expect((await held).status).toBe(200);
      await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'busy:after')");
      expect(await sub.next((e) => e.jobKey === "busy:after")).toMatchObject({ kind: "enqueued" });
      expect(sub.errors).toEqual([]);
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await Promise.all(clients.splice(ownClients).map((c) => c.dispose()));
      await busy.stop();
      await db.pool.query("select graphile_worker.remove_job('busy:after')");
    }
  });

  it("refuses non-admins, anonymous clients and bad tokens, and checks its filter", async () => {
    const asUser = await subscribe(user.token);
    await asUser.ended;
    expect(asUser.errors.map((e) => e.extensions?.code ?? e.message)).toEqual(["ADMIN"]);
    const anonymous = await subscribe(null);
    await anonymous.ended;
    expect(anonymous.errors.map((e) => e.extensions?.code ?? e.message)).toEqual(["ADMIN"]);
    const badToken = await subscribe("x".repeat(43));
    await badToken.ended;
    expect(badToken.errors.map((e) => e.message)).toEqual(["Invalid or expired session token."]);
    const badFilter = await subscribe(admin.token, { keyPrefix: "" });
    await badFilter.ended;
    expect(badFilter.errors.map((e) => e.extensions?.code)).toEqual(["EVFLT"]);
    for (const s of [asUser, anonymous, badToken, badFilter]) expect(s.events).toEqual([]);
  });

  it("ends a subscription whose session is gone", async () => {
    const other = await signIn(db, (await createUser(db, { isAdmin: true })).id);
    const sub = await subscribe(other.token, { keyPrefix: "session:" });
    await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'session:1')");
    await sub.next((e) => e.jobKey === "session:1");
    await db.pool.query("delete from app_private.sessions where id = $1", [other.sessionId]);
    await new Promise((r) => setTimeout(r, 300)); // past the re-check interval (200 ms here)
    await db.pool.query("select app_private.add_job('t_events', '{\"fail\": false}', job_key := 'session:2')");
    await sub.ended;
    expect(sub.errors.map((e) => e.extensions?.code)).toEqual(["ADMIN"]);
    expect(sub.events.map((e) => e.jobKey)).toEqual(["session:1"]);
    await db.pool.query("select graphile_worker.remove_job(key) from graphile_worker.jobs where key like 'session:%'");
  });
});
