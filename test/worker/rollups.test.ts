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

    const minutes = await asAdmin<{ bucket: Date; runs: string; succeeded: string; failures: string }>("select * from app_public.job_activity('minute')");
    expect(minutes).toHaveLength(60);
    const counted = await db.pool.query(`select date_trunc('minute', finished_at) as bucket, count(*)::int as runs,
        count(*) filter (where outcome = 'succeeded')::int as succeeded,
        count(*) filter (where outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned'))::int as failures
      from app_public.job_runs where outcome <> 'running' group by 1`);
    const byBucket = new Map(counted.rows.map((r) => [r.bucket.getTime(), [r.runs, r.succeeded, r.failures]]));
    for (const m of minutes) expect([Number(m.runs), Number(m.succeeded), Number(m.failures)]).toEqual(byBucket.get(m.bucket.getTime()) ?? [0, 0, 0]);
    expect(minutes.reduce((n, m) => n + Number(m.runs), 0)).toBe(counted.rows.reduce((n, r) => n + r.runs, 0));
    // Consecutive minutes ending with the current one.
    expect(minutes[59]!.bucket.getTime()).toBe(Math.floor(Date.now() / 60_000) * 60_000);
    expect(minutes[1]!.bucket.getTime() - minutes[0]!.bucket.getTime()).toBe(60_000);

    const hours = await asAdmin<{ bucket: Date; runs: string }>("select * from app_public.job_activity('hour')");
    expect(hours).toHaveLength(24);
    expect(hours.reduce((n, h) => n + Number(h.runs), 0)).toBe(counted.rows.reduce((n, r) => n + r.runs, 0));
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
