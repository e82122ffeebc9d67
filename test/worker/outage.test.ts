// Every backend of the database terminated at once (what a Postgres restart or failover does to
// its clients), three times in a row, while two worker processes run a steady stream of jobs and
// an API serves requests: everything reconnects by itself, no job is lost or run twice, and jobs
// enqueued a few seconds later are picked up in under a second again. The poll interval is 10 s
// here, so sub-second pickup needs graphile-worker's LISTEN connection (jobs due now) and the
// exact wake-ups (jobs due later, enqueued when nothing else would wake the fetcher) to be back.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { createTestDb, createUser, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { spawnWorkerProcess, type WorkerProcess } from "../helpers/worker-process.ts";

let db: TestDb;
let ctl: pg.Client;
let api: ApiHandle | undefined;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  db = await createTestDb();
  await db.pool.query(`
    insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_slow', 'test', 0, 10, 10000);
    create table public.t_done (n integer primary key, worker text not null, runs integer not null default 1, at timestamptz not null default clock_timestamp());
    create table public.t_enqueued (n integer primary key, at timestamptz not null default clock_timestamp());`);
  // The test's own connection: the one that enqueues and terminates everybody else's.
  ctl = new pg.Client({ connectionString: db.ownerUrl });
  await ctl.connect();
});
afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await api?.stop();
  await ctl?.end();
  await db?.drop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const one = async <T = Record<string, unknown>>(sql: string, params: unknown[] = []) => (await ctl.query(sql, params)).rows[0] as T;

/**
 * Enqueues t_slow jobs n = next..next+count-1 through the app's SQL path (app_private.add_jobs,
 * which records exact wake-ups for future jobs); runIn(i) gives job i's delay in ms, null for now.
 */
let next = 1;
async function enqueue(count: number, runIn: (i: number) => number | null = () => null): Promise<void> {
  const from = next;
  next += count;
  const delays = Array.from({ length: count }, (_, i) => runIn(i));
  await ctl.query(
    `with jobs as (
       select app_private.add_jobs(array(
         select row('t_slow', json_build_object('n', $1::int + i - 1), null, now() + d * interval '1 millisecond',
                    null, null, null, null)::graphile_worker.job_spec
         from unnest($2::int[]) with ordinality u(d, i))))
     insert into public.t_enqueued (n) select generate_series($1::int, $1::int + $3::int - 1) from (select count(*) from jobs) j`,
    [from, delays, count],
  );
}

async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check().catch(() => false)) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

const allDone = (total: number) => async () => {
  const r = await one<{ done: number; queued: number }>(
    "select (select count(*)::int from public.t_done) as done, (select count(*)::int from graphile_worker.jobs) as queued",
  );
  return r.done === total && r.queued === 0;
};

/** Pickup latency (run_at → started, from the job history) of the first runs of jobs n >= from. */
const pickup = (from: number, enqueuedAfter: Date) =>
  one<{ n: number; due_later: number; max_ms: number; attempts: number }>(
    `select count(*)::int as n, count(*) filter (where r.run_at > e.at + interval '500 milliseconds')::int as due_later,
            max(extract(epoch from r.started_at - r.run_at) * 1000)::float8 as max_ms, max(r.attempt) as attempts
     from app_public.job_runs r join public.t_enqueued e on e.n = (r.payload->>'n')::int
     where r.task_identifier = 't_slow' and e.n >= $1 and e.at > $2`,
    [from, enqueuedAfter],
  );

describe("a database outage under load", () => {
  it("after every backend is terminated, workers and API recover by themselves, every job runs exactly once, and pickup is back under a second", async () => {
    const admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
    api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
    const healthz = async () => (await fetch(`${api!.url}/healthz`)).status === 200;
    const gqlWorkers = async () => {
      const res = await fetch(`${api!.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${admin.token}` },
        body: JSON.stringify({ query: "{ allWorkerProcesses { nodes { rowId lastSeenAt } } }" }),
      });
      const body = (await res.json()) as { data?: { allWorkerProcesses: { nodes: { rowId: string; lastSeenAt: string }[] } | null } };
      return res.status === 200 ? (body.data?.allWorkerProcesses?.nodes ?? null) : null;
    };

    const env = { WORKER_CONCURRENCY: "8", SLOW_MS: "20", WORKER_DEAD_AFTER_MS: "3000", WORKER_POLL_INTERVAL_MS: "10000", JOB_HISTORY_FLUSH_MS: "20" };
    workers.push(...(await Promise.all([spawnWorkerProcess(db, env), spawnWorkerProcess(db, env)])));
    expect(await healthz()).toBe(true);
    expect((await gqlWorkers())?.map((n) => n.rowId).sort()).toEqual(workers.map((w) => w.poolId).sort());

    // A steady stream: five jobs every 25 ms (one of them due a second later), until 7 s after the last outage.
    let stopAt = Infinity;
    const enqueuer = (async () => {
      while (Date.now() < stopAt) {
        await enqueue(5, (i) => (i === 4 ? 1000 : null));
        await sleep(25);
      }
    })();
    await sleep(3000);

    // Three outages a second apart: each cuts whatever is in flight at that moment (fetches, task
    // queries, job completions, history writes, LISTEN), and the later ones cut the reconnections.
    const census: Record<string, number>[] = [];
    for (let round = 0; round < 3; round++) {
      if (round > 0) await sleep(1000);
      const { rows } = await ctl.query<{ application_name: string; n: number }>(
        `select application_name, count(*)::int as n
         from (select application_name, pg_terminate_backend(pid) as terminated
               from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()) t
         where terminated group by 1`,
      );
      census.push(Object.fromEntries(rows.map((k) => [k.application_name, k.n])));
    }
    const { at: outageAt } = await one<{ at: Date }>("select clock_timestamp() as at");
    stopAt = Date.now() + 7000;
    // Every kind of connection went: the workers' pools (LISTEN included), their history writers, the API's.
    expect(census[0]!["hourglass-worker"]).toBeGreaterThanOrEqual(2 * 8);
    expect(census[0]!["hourglass-history"]).toBe(2);
    expect(census[0]!["hourglass-api"]).toBeGreaterThanOrEqual(1);
    for (const c of census) expect(c["hourglass-worker"]).toBeGreaterThanOrEqual(2);

    // The API answers again by itself: health, and a GraphQL query showing both workers beating since.
    const healthMs = await until("/healthz to answer 200", 15_000, healthz);
    const gqlMs = await until("GraphQL to show both workers heartbeating after the outage", 15_000, async () => {
      const nodes = await gqlWorkers();
      return nodes?.length === 2 && nodes.every((n) => new Date(n.lastSeenAt) > outageAt);
    });

    await enqueuer;
    const streamed = next - 1;
    await until("every streamed job to complete", 45_000, allDone(streamed));

    // Quiet now: jobs due 1.5 s ahead are found only by an exact wake-up (the next poll is up to 10 s away).
    await enqueue(4, (i) => 1500 + 200 * i);
    await until("the jobs due later to complete", 20_000, allDone(streamed + 4));
    const total = next - 1;

    // Nothing lost, nothing run twice, nothing left locked or running.
    expect(await one("select count(*)::int as n, min(n) as lo, max(n) as hi from public.t_enqueued")).toEqual({ n: total, lo: 1, hi: total });
    expect(await one("select count(*)::int as n, max(runs) as runs from public.t_done")).toEqual({ n: total, runs: 1 });
    await until("the history to be written", 10_000, async () =>
      (await one<{ n: number }>("select count(*)::int as n from app_public.job_runs where outcome = 'succeeded'")).n >= total,
    );
    expect(
      await one(
        `select count(*)::int as jobs, count(*) filter (where succeeded = 1)::int as once
         from (select payload->>'n' as n, count(*) filter (where outcome = 'succeeded') as succeeded
               from app_public.job_runs where task_identifier = 't_slow' group by 1) r`,
      ),
    ).toEqual({ jobs: total, once: total });
    expect(await one("select count(*)::int as n from app_public.job_runs where outcome = 'running'")).toEqual({ n: 0 });

    // Both worker processes lived through it, kept heartbeating and kept taking jobs.
    for (const w of workers) expect(w.child.exitCode).toBeNull();
    const { rows: beats } = await ctl.query("select id from app_public.worker_processes where last_seen_at > now() - interval '3 seconds' order by id");
    expect(beats.map((b) => b.id)).toEqual(workers.map((w) => w.poolId).sort());
    const after = await one<{ workers: number }>(
      "select count(distinct d.worker)::int as workers from public.t_done d join public.t_enqueued e using (n) where e.at > $1",
      [outageAt],
    );
    expect(after.workers).toBe(2);

    // Pickup from 3 s after the last outage: under a second, for jobs due at once and due later.
    const recovered = await pickup(1, new Date(outageAt.getTime() + 3000));
    const woken = await pickup(streamed + 1, outageAt);
    testLog.info("recovery after the outage", { healthMs, gqlMs, streamed, ...recovered, wokenMaxMs: woken.max_ms });
    expect(recovered.n).toBeGreaterThan(100);
    expect(recovered.due_later).toBeGreaterThan(20);
    expect(recovered.attempts).toBe(1);
    expect(recovered.max_ms).toBeLessThan(1000);
    expect(woken).toMatchObject({ n: 4, due_later: 4, attempts: 1 });
    expect(woken.max_ms).toBeLessThan(1000);
  }, 120_000);
});
