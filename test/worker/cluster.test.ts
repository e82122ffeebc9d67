// Three worker processes on one crontab, with real minute ticks: every tick is scheduled by all
// three and enqueued and run exactly once; an admin pauses the schedule in SQL and its next tick
// is recorded exactly once as skipped, by whichever worker took it; after resuming, the following
// tick runs. Three ticks in all: the first one after the workers are up, then the paused one,
// then the resumed one (about two and a half minutes).
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSchedules } from "../../src/worker/crontab.ts";
import { asUser, createTestDb, createUser, signIn, testLog, type TestDb } from "../helpers/db.ts";
import { spawnWorkerProcess, type WorkerProcess } from "../helpers/worker-process.ts";

const CRONTAB = path.resolve(import.meta.dirname, "../fixtures/cluster.crontab");
const MINUTE = 60_000;

let db: TestDb;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  db = await createTestDb();
  await db.pool.query(`
    insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_tick', 'test', 0, 5, 10000);
    create table public.t_ticks (ts timestamptz, worker text not null, at timestamptz not null default clock_timestamp());`);
  // What the migration runner does at start-up with the real crontab.
  await db.pool.query("select app_private.sync_schedules($1::jsonb)", [JSON.stringify(await readSchedules(CRONTAB))]);
});
afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await db?.drop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, deadline: number, check: () => Promise<T | null | undefined>): Promise<T> {
  for (;;) {
    const found = await check();
    if (found !== null && found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** The history rows of t_tick for one tick (the job's _cron.ts), as the cluster wrote them. */
async function runsOf(tick: number) {
  const { rows } = await db.pool.query<{ job_id: string; job_key: string; outcome: string; result: unknown; worker_id: string }>(
    `select job_id::text, job_key, outcome, result, worker_id from app_public.job_runs
     where task_identifier = 't_tick' and (payload->'_cron'->>'ts')::timestamptz = $1 order by started_at`,
    [new Date(tick)],
  );
  return rows;
}

/** Pool ids of the processes heartbeating: they beat every second here and count as dead after 6 s. */
async function heartbeating(): Promise<string[]> {
  const { rows } = await db.pool.query<{ id: string }>(
    "select id from app_public.worker_processes where last_seen_at > now() - interval '4 seconds' order by id",
  );
  return rows.map((r) => r.id);
}

describe("three worker processes on one crontab", () => {
  it("each tick runs exactly once across the cluster; a paused schedule's tick is skipped exactly once; after resuming the next tick runs; run-now runs once at once", async () => {
    const admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
    const env = { CRONTAB_FILE: CRONTAB, WORKER_DEAD_AFTER_MS: "6000", WORKER_CONCURRENCY: "2" };
    workers.push(...(await Promise.all([1, 2, 3].map(() => spawnWorkerProcess(db, env)))));
    const poolIds = workers.map((w) => w.poolId).sort();
    expect(new Set(poolIds).size).toBe(3);
    // The first tick after all three were up: every process's cron scheduled it.
    const t1 = (Math.floor(Date.now() / MINUTE) + 1) * MINUTE;
    const [t2, t3] = [t1 + MINUTE, t1 + 2 * MINUTE];
    testLog.info("cluster up; waiting for ticks", { t1: new Date(t1).toISOString(), inMs: t1 - Date.now() });

    // Tick 1 runs (once); pause the schedule right after it, as an admin in SQL.
    await until("tick 1 to run", t1 + 30_000, async () => (await runsOf(t1)).find((r) => r.outcome === "succeeded"));
    expect(await heartbeating()).toEqual(poolIds);
    await asUser(db, admin.sessionId, (c) => c.query("select app_public.pause_schedule('t_tick', 'cluster test')"));

    // Tick 2 is recorded as skipped by whichever worker took it; then resume.
    await until("tick 2 to be recorded", t2 + 30_000, async () => (await runsOf(t2)).find((r) => r.outcome !== "running"));
    expect(await heartbeating()).toEqual(poolIds);
    await asUser(db, admin.sessionId, (c) => c.query("select app_public.resume_schedule('t_tick')"));

    // Tick 3 runs again.
    await until("tick 3 to run", t3 + 30_000, async () => (await runsOf(t3)).find((r) => r.outcome === "succeeded"));
    expect(await heartbeating()).toEqual(poolIds);

    // Run now: one job, taken by one of the three, at once (not at the next tick).
    const asked = Date.now();
    await asUser(db, admin.sessionId, (c) => c.query("select app_public.run_schedule('t_tick', 'run now from the test')"));
    const ranNow = await until("the run-now job to run", asked + 10_000, async () => {
      const { rows } = await db.pool.query<{ outcome: string; job_key: string; started_at: Date }>(
        "select outcome, job_key, started_at from app_public.job_runs where task_identifier = 't_tick' and payload->'_cron' is null and outcome <> 'running'",
      );
      return rows.length ? rows : null;
    });
    await sleep(1000); // a duplicate, if there were one, would have been written by now (history flushes every 100 ms)

    // Every process scheduled every tick; the database kept one job per tick.
    for (const w of workers) {
      expect(w.child.exitCode).toBeNull();
      expect(w.cronTicks).toEqual(expect.arrayContaining([t1, t2, t3]));
    }
    const runs = await Promise.all([t1, t2, t3].map(runsOf));
    testLog.info("who took each tick", { workers: runs.map((r) => r.map((x) => x.worker_id).join(",")) });
    expect(runs.map((r) => r.map((x) => x.outcome))).toEqual([["succeeded"], ["skipped"], ["succeeded"]]);
    expect(runs[1]![0]!.result).toEqual({ skipped: "schedule t_tick is paused: cluster test" });
    for (const [run] of runs) expect(run!.job_key).toBe("cron:t_tick");
    expect(new Set(runs.map(([run]) => run!.job_id)).size).toBe(3);

    // The task itself ran once per tick that was not paused, and never twice for any tick (a tick
    // before t1, scheduled while the processes were starting, is allowed but must be single too).
    const { rows: ticks } = await db.pool.query<{ ts: Date | null; n: number }>(
      "select ts, count(*)::int as n from public.t_ticks group by ts order by ts",
    );
    expect(ticks.filter((t) => t.ts !== null && t.ts.getTime() >= t1)).toEqual([
      { ts: new Date(t1), n: 1 },
      { ts: new Date(t3), n: 1 },
    ]);
    // The run-now: exactly once, under the schedule's key, within seconds of being asked for.
    expect(ticks.filter((t) => t.ts === null)).toEqual([{ ts: null, n: 1 }]);
    expect(ranNow).toEqual([{ outcome: "succeeded", job_key: "cron:t_tick", started_at: expect.any(Date) }]);
    expect(ranNow[0]!.started_at.getTime() - asked).toBeLessThan(10_000);
    expect(ticks.every((t) => t.n === 1)).toBe(true);
    const { rows: audit } = await db.pool.query("select action, target, reason from app_public.admin_actions order by id");
    expect(audit).toEqual([
      { action: "pause_schedule", target: "schedule:t_tick", reason: "cluster test" },
      { action: "resume_schedule", target: "schedule:t_tick", reason: null },
      { action: "run_schedule", target: "schedule:t_tick", reason: "run now from the test" },
    ]);

    // A clean stop of all three: exit 0, no job left locked, no heartbeat left behind.
    expect(await Promise.all(workers.map((w) => w.stop()))).toEqual([0, 0, 0]);
    const { rows: locked } = await db.pool.query("select id from graphile_worker.jobs where locked_by is not null");
    expect(locked).toEqual([]);
    expect(await heartbeating()).toEqual([]);
  }, 210_000);
});
