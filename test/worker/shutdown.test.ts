import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { createTestDb, jobRuns, listJobs, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

let started: () => void;
const startedOnce = new Promise<void>((r) => (started = r));
let runs = 0;
const tasks = [
  resolveTask("t_finishes_during_shutdown", defineTask({
    description: "takes a while, and finishes after shutdown has begun",
    payload: z.object({}),
    async run() {
      runs++;
      started();
      await new Promise((r) => setTimeout(r, 1500));
      return { finished: true };
    },
  })),
  resolveTask("t_quick", defineTask({ description: "no-op", payload: z.object({}), async run() {} })),
];

describe("graceful shutdown", () => {
  it("completes a job that finishes during shutdown, returns unstarted jobs unlocked, and re-runs nothing", async () => {
    await db.pool.query("select graphile_worker.add_job('t_finishes_during_shutdown', '{}'::json, max_attempts := 1)");
    // Queued behind it on a single-slot worker with a local queue: fetched (and locked) in a batch, never started.
    await db.pool.query("select graphile_worker.add_job('t_quick', '{}'::json, run_at := now() + interval '1 second') from generate_series(1, 20)");
    const config = testConfig(db, { WORKER_CONCURRENCY: "1", WORKER_LOCAL_QUEUE_SIZE: "50", WORKER_POLL_INTERVAL_MS: "100" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    await startedOnce;
    await new Promise((r) => setTimeout(r, 1100)); // the quick jobs are due (and batched) meanwhile
    await worker.stop();

    const jobs = await listJobs(db);
    expect(jobs.filter((j) => j.task_identifier === "t_finishes_during_shutdown")).toEqual([]);
    expect(jobs.filter((j) => j.locked_by !== null)).toEqual([]);
    const [run] = await jobRuns(db, "t_finishes_during_shutdown");
    expect(run).toMatchObject({ outcome: "succeeded", result: { finished: true } });
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.job_runs where outcome = 'running'");
    expect(rows[0].n).toBe(0);

    // A second worker finds the remaining quick jobs available at once and never sees the long one again.
    const again = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    const deadline = Date.now() + 15_000;
    while ((await listJobs(db)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await again.stop();
    expect(await listJobs(db)).toEqual([]);
    expect(runs).toBe(1);
    expect((await jobRuns(db, "t_quick")).filter((r) => r.outcome === "succeeded")).toHaveLength(20);
  });
});
