import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { createTestDb, drainJobs, jobRuns, testConfig, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

async function insertRuns(count: number, ageDays: number) {
  await db.pool.query(
    `insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, finished_at, outcome)
     select gen_random_uuid(), g, 'old_task', 1, 1, 'w', now() - make_interval(days => $2) - g * interval '1 second',
            now() - make_interval(days => $2) - g * interval '1 second', 'succeeded'
     from generate_series(1, $1) g`,
    [count, ageDays],
  );
}

describe("job_runs__prune", () => {
  it("deletes history older than the retention in batches, keeps newer rows, and reports {deleted, remaining}", async () => {
    await insertRuns(2500, 20);
    await insertRuns(300, 3);
    await db.pool.query("select app_private.add_job('job_runs__prune', '{\"batchSize\": 1000}'::json)");
    await drainJobs(db, await loadTasks(), testConfig(db, { JOB_HISTORY_RETENTION_DAYS: "14" }));
    const [run] = await jobRuns(db, "job_runs__prune");
    expect(run).toMatchObject({ outcome: "succeeded", result: { deleted: 2500, remaining: 0 } });
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.job_runs where task_identifier = 'old_task'");
    expect(rows[0].n).toBe(300);
  });

  it("finds nothing to prune through the BRIN index, without scanning a large table", async () => {
    // Steady state: every row is newer than the cutoff; the hourly sweep must stay cheap.
    await insertRuns(50_000, 1);
    await db.pool.query("analyze app_public.job_runs");
    const { rows } = await db.pool.query(
      "explain (format json) select d.ctid from app_public.job_runs d where d.started_at < now() - interval '14 days' limit 5000",
    );
    const plan = JSON.stringify(rows[0]["QUERY PLAN"]);
    // PostgreSQL 15 takes the BRIN; 18 may skip-scan the (task, started_at) btree instead.
    expect(plan).toMatch(/"Index Name":"job_runs_(started_brin|task_started_idx)"/);
    expect(plan).not.toContain("Seq Scan");
  });
});
