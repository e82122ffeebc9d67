// The activity rollups behind jobActivity and jobStats: kept by the history writers (and crash
// recovery's abandoned marks) in the statement that writes each batch, they must say exactly what
// counting job_runs says, bucket by bucket; admins only; pruned with the history.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { syncCatalogue } from "../../src/worker/catalogue.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { asVisitor, createTestDb, createUser, drainJobs, refusal, signIn, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let admin: { sessionId: string };
let user: { sessionId: string };

const work = resolveTask("t_rollup", defineTask({
  description: "sleeps, then succeeds or fails (test)",
  payload: z.object({ ms: z.number(), fail: z.boolean() }),
  maxAttempts: 2,
  async run({ ms, fail }) {
    await new Promise((r) => setTimeout(r, ms));
    if (fail) throw new Error("asked to fail");
    return {};
  },
}));

beforeAll(async () => {
  db = await createTestDb();
  await syncCatalogue(db.pool, [work]);
  admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
  user = await signIn(db, (await createUser(db)).id);
});
afterAll(async () => {
  await db?.drop();
});

const asAdmin = <T>(sql: string, params: unknown[] = []) => asVisitor(db, admin.sessionId, async (c) => (await c.query(sql, params)).rows as T[]);

describe("activity rollups", () => {
  it("match counting job_runs: by task and outcome, and minute by minute", async () => {
    await db.pool.query(`select graphile_worker.add_job('t_rollup', json_build_object('ms', g % 7, 'fail', g % 5 = 0), max_attempts := (1 + (g % 2))::smallint)
      from generate_series(1, 60) g`);
    await drainJobs(db, [work]);
    // A run recovery marks abandoned (its worker died while it ran).
    await db.pool.query(`insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, outcome)
      values (gen_random_uuid(), 424242, 't_rollup', 1, 2, 'dead', now(), 'running')`);
    await db.pool.query("update app_public.job_runs set outcome = 'abandoned', finished_at = now(), duration_ms = 1.5 where job_id = 424242");

    const expected = await db.pool.query(`select task_identifier, outcome, count(*)::int as runs, avg(coalesce(duration_ms, 0)) as avg, max(coalesce(duration_ms, 0)) as max
      from app_public.job_runs where outcome <> 'running' group by 1, 2 order by 1, 2`);
    const stats = await asAdmin<{ task_identifier: string; outcome: string; runs: string; avg_duration_ms: number; max_duration_ms: number }>(
      "select * from app_public.job_stats(now() - interval '1 hour')",
    );
    expect(stats.map((s) => [s.task_identifier, s.outcome, Number(s.runs)])).toEqual(expected.rows.map((r) => [r.task_identifier, r.outcome, r.runs]));
    expect(expected.rows.map((r) => r.outcome)).toEqual(["abandoned", "failed_permanently", "failed_retrying", "succeeded"]);
    for (const [i, s] of stats.entries()) {
      expect(s.avg_duration_ms).toBeCloseTo(expected.rows[i].avg, 6);
      expect(s.max_duration_ms).toBeCloseTo(expected.rows[i].max, 6);
    }

    const minutes = await asAdmin<{ bucket: Date; runs: string; succeeded: string; failures: string; avg_duration_ms: number | null; max_duration_ms: number | null }>(
      "select * from app_public.job_activity('minute')",
    );
    expect(minutes).toHaveLength(60);
    const counted = await db.pool.query(`select date_trunc('minute', finished_at) as bucket, count(*)::int as runs,
        count(*) filter (where outcome = 'succeeded')::int as succeeded,
        count(*) filter (where outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned'))::int as failures,
        avg(duration_ms)::float8 as avg, max(duration_ms)::float8 as max
      from app_public.job_runs where outcome <> 'running' group by 1`);
    const byBucket = new Map(counted.rows.map((r) => [r.bucket.getTime(), r]));
    for (const m of minutes) {
      const c = byBucket.get(m.bucket.getTime());
      expect([Number(m.runs), Number(m.succeeded), Number(m.failures)]).toEqual(c ? [c.runs, c.succeeded, c.failures] : [0, 0, 0]);
      if (!c) {
        expect([m.avg_duration_ms, m.max_duration_ms]).toEqual([null, null]);
        continue;
      }
      expect(m.avg_duration_ms).toBeCloseTo(c.avg, 6);
      expect(m.max_duration_ms).toBeCloseTo(c.max, 6);
    }
    expect(minutes.filter((m) => Number(m.runs) > 0).length).toBeGreaterThan(0);
    expect(minutes.reduce((n, m) => n + Number(m.runs), 0)).toBe(counted.rows.reduce((n, r) => n + r.runs, 0));
    // Consecutive minutes ending with the current one (the database's: a minute may turn meanwhile).
    const { rows: [clock] } = await db.pool.query("select date_trunc('minute', now(), 'UTC') as minute");
    expect(minutes[59]!.bucket.getTime()).toBeLessThanOrEqual(clock.minute.getTime());
    expect(minutes[59]!.bucket.getTime()).toBeGreaterThanOrEqual(clock.minute.getTime() - 60_000);
    expect(minutes[1]!.bucket.getTime() - minutes[0]!.bucket.getTime()).toBe(60_000);

    const hours = await asAdmin<{ bucket: Date; runs: string }>("select * from app_public.job_activity('hour')");
    expect(hours).toHaveLength(24);
    expect(hours.reduce((n, h) => n + Number(h.runs), 0)).toBe(counted.rows.reduce((n, r) => n + r.runs, 0));
  });

  it("jobStats takes the part-hour from the minute rows and whole hours from the hour rows, to the minute", async () => {
    // Rollup rows of a task nothing else writes, at known times (hour rows as the writers keep
    // them: the sum of that hour's minutes).
    await db.pool.query(`insert into app_private.job_runs_per_minute (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
      select date_trunc('hour', now(), 'UTC') - interval '3 hours' + m * interval '1 minute', 't_window', 'succeeded', 0, 1, 10, 10
      from generate_series(0, 179) m`);
    await db.pool.query(`insert into app_private.job_runs_per_hour (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
      select date_trunc('hour', now(), 'UTC') - interval '3 hours' + h * interval '1 hour', 't_window', 'succeeded', 0, 60, 600, 10
      from generate_series(0, 2) h`);
    const runs = async (since: string) => {
      const rows = await asAdmin<{ task_identifier: string; runs: string }>(
        `select * from app_public.job_stats(date_trunc('hour', now(), 'UTC') - interval '3 hours' + $1::interval)`, [since]);
      return Number(rows.find((r) => r.task_identifier === "t_window")?.runs ?? 0);
    };
    expect(await runs("0 minutes")).toBe(180); // three whole hours
    expect(await runs("1 minute")).toBe(179); // 59 minute rows, then two hours
    expect(await runs("59 minutes")).toBe(121);
    expect(await runs("60 minutes")).toBe(120);
    expect(await runs("61 minutes")).toBe(119);
    expect(await runs("90 minutes 30 seconds")).toBe(90); // to the minute: from :30
    expect(await runs("179 minutes")).toBe(1);
    await db.pool.query("delete from app_private.job_runs_per_minute where task_identifier = 't_window'");
    await db.pool.query("delete from app_private.job_runs_per_hour where task_identifier = 't_window'");
  });

  it("can be rebuilt from the history (after rows written by hand)", async () => {
    const before = await db.pool.query("select sum(runs)::int as n from app_private.job_runs_per_hour");
    await db.pool.query("delete from app_private.job_runs_per_minute; delete from app_private.job_runs_per_hour");
    await db.pool.query("select app_private.rebuild_job_rollups()");
    const counted = await db.pool.query("select count(*)::int as n from app_public.job_runs where outcome <> 'running'");
    const after = await db.pool.query("select sum(runs)::int as n from app_private.job_runs_per_hour");
    const minutes = await db.pool.query("select sum(runs)::int as n from app_private.job_runs_per_minute");
    expect(after.rows[0].n).toBe(counted.rows[0].n);
    expect(minutes.rows[0].n).toBe(counted.rows[0].n);
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it("are for admins only, and say what they accept", async () => {
    expect(await refusal(db, user.sessionId, "select * from app_public.job_activity('minute')")).toBe("ADMIN");
    expect(await refusal(db, user.sessionId, "select * from app_public.job_stats(now())")).toBe("ADMIN");
    expect(await refusal(db, null, "select * from app_public.job_stats(now())")).toBe("ADMIN");
    expect(await refusal(db, admin.sessionId, "select * from app_public.job_activity('week')")).toBe("JARES");
    expect(await refusal(db, admin.sessionId, "select * from app_public.job_stats(null)")).toBe("JASNC");
  });

  it("are pruned with the history: minutes after two days, hours after the retention period", async () => {
    await db.pool.query(`insert into app_private.job_runs_per_minute (bucket, task_identifier, outcome, shard, runs)
      values (now() - interval '3 days', 't_rollup', 'succeeded', 0, 1), (now() - interval '1 day', 't_rollup', 'succeeded', 0, 1)`);
    await db.pool.query(`insert into app_private.job_runs_per_hour (bucket, task_identifier, outcome, shard, runs)
      values (now() - interval '40 days', 't_rollup', 'succeeded', 0, 1), (now() - interval '3 days', 't_rollup', 'succeeded', 0, 1)`);
    await db.pool.query("select * from app_private.sweep_job_runs(1000, interval '30 days')");
    const left = async (table: string) =>
      (await db.pool.query(`select count(*)::int as n from ${table} where bucket < now() - interval '12 hours'`)).rows[0].n;
    expect(await left("app_private.job_runs_per_minute")).toBe(1);
    expect(await left("app_private.job_runs_per_hour")).toBe(1);
  });
});
