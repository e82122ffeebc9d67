// Exact wake-ups: a future job runs at its run_at, not at the worker's next poll.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { createTestDb, drainJobs, jobRuns, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
  await db.pool.query(
    "insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_wake', 'test', 0, 1, 10000)",
  );
});
afterAll(async () => {
  await db?.drop();
});

const tasks = [resolveTask("t_wake", defineTask({ description: "records that it ran", payload: z.object({}), async run() {} }))];

async function ranWithin(ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.job_runs where task_identifier = 't_wake' and outcome = 'succeeded'");
    if (rows[0].n > 0) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

describe("exact wake-ups", () => {
  // A poll interval of a minute: without a wake-up, nothing scheduled for a second from now runs
  // within the test's window.
  const slowPoll = { WORKER_POLL_INTERVAL_MS: "60000" };

  it("a job scheduled after the worker started runs at its run_at, long before the next poll", async () => {
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, slowPoll), tasks, log: testLog, crontabFile: null });
    try {
      await db.pool.query("select app_private.add_job('t_wake', '{}', run_at := now() + interval '1 second')");
      expect(await ranWithin(8000)).toBe(true);
      expect(worker.wake!.nudges).toBeGreaterThan(0);
    } finally {
      await worker.stop();
    }
  });

  it("a job scheduled before the worker started is woken for too (wake-ups are read at start)", async () => {
    await db.pool.query("delete from app_public.job_runs");
    const { rows } = await db.pool.query("select app_private.add_job('t_wake', '{}', run_at := now() + interval '5 seconds'), now() + interval '5 seconds' as run_at");
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, slowPoll), tasks, log: testLog, crontabFile: null });
    try {
      // Started before the job was due (else its first fetch would find it, wake-ups or not).
      expect(Date.now()).toBeLessThan((rows[0].run_at as Date).getTime());
      expect(await ranWithin(8000)).toBe(true);
      expect(worker.wake!.nudges).toBeGreaterThan(0);
    } finally {
      await worker.stop();
    }
  });

  it("with WORKER_EXACT_WAKE=false the same job waits for the poll", async () => {
    await db.pool.query("delete from app_public.job_runs");
    expect(await db.pool.query("select 1 from graphile_worker.jobs")).toMatchObject({ rowCount: 0 });
    const config = testConfig(db, { ...slowPoll, WORKER_EXACT_WAKE: "false" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    try {
      await db.pool.query("select app_private.add_job('t_wake', '{}', run_at := now() + interval '500 milliseconds')");
      expect(await ranWithin(3000)).toBe(false);
      expect(worker.wake).toBeNull();
    } finally {
      await worker.stop();
    }
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs))");
  });

  it("job_wakeups__sweep deletes wake-ups more than a minute old, and only those", async () => {
    await db.pool.query("delete from app_private.job_wakeups");
    await db.pool.query(
      "insert into app_private.job_wakeups (at) values (now() - interval '2 hours'), (now() - interval '5 minutes'), (now() - interval '10 seconds'), (now() + interval '1 hour')",
    );
    await db.pool.query("select app_private.add_job('job_wakeups__sweep', '{}')");
    await drainJobs(db, (await loadTasks()).filter((t) => t.identifier === "job_wakeups__sweep"));
    expect((await jobRuns(db, "job_wakeups__sweep")).at(-1)).toMatchObject({ outcome: "succeeded", result: { deleted: 2, remaining: 0 } });
    const { rows } = await db.pool.query("select count(*)::int as n from app_private.job_wakeups");
    expect(rows[0].n).toBe(2);
  });
});
