// A worker started for a subset of tasks (WORKER_TASKS): dedicated capacity for user-facing work.
// It runs only its tasks, leaves the others' jobs untouched (not locked, no attempt used, no
// history) for workers that serve them, and says in its heartbeat which tasks it serves.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { createTestDb, jobRuns, listJobs, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
  await db.pool.query(`insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms)
                       values ('t_mine', 'test', 0, 3, 10000), ('t_theirs', 'test', 0, 3, 10000)`);
});
afterAll(async () => {
  await db?.drop();
});

const noop = (identifier: string) =>
  resolveTask(identifier, defineTask({ description: "records its run (test)", payload: z.object({ n: z.number() }), async run({ n }) { return { n }; } }));

describe("a worker for a subset of tasks", () => {
  it("runs only the tasks in WORKER_TASKS; the others' jobs wait untouched for another worker", async () => {
    await db.pool.query(
      "select graphile_worker.add_job('t_theirs', json_build_object('n', g)), graphile_worker.add_job('t_mine', json_build_object('n', g)) from generate_series(1, 5) g",
    );
    const tasks = [noop("t_mine"), noop("t_theirs")];
    const dedicated = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, { WORKER_TASKS: "t_mine" }), tasks, log: testLog, crontabFile: null });
    try {
      const deadline = Date.now() + 15_000;
      while ((await jobRuns(db, "t_mine")).filter((r) => r.outcome === "succeeded").length < 5) {
        if (Date.now() > deadline) throw new Error("the dedicated worker did not run its jobs");
        await new Promise((r) => setTimeout(r, 20));
      }
      // Its own are done and gone; the others' are as they were queued.
      const queued = await listJobs(db);
      expect(queued.filter((j) => j.task_identifier === "t_mine")).toEqual([]);
      expect(queued.filter((j) => j.task_identifier === "t_theirs").map((j) => [j.locked_by, j.attempts])).toEqual(Array(5).fill([null, 0]));
      expect(await jobRuns(db, "t_theirs")).toEqual([]);
      const { rows } = await db.pool.query("select tasks from app_public.worker_processes where id = $1", [dedicated.heartbeat.id]);
      expect(rows).toEqual([{ tasks: ["t_mine"] }]);
    } finally {
      await dedicated.stop();
    }
    // A worker for every task takes the rest.
    const general = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db), tasks, log: testLog, crontabFile: null });
    try {
      const deadline = Date.now() + 15_000;
      while ((await jobRuns(db, "t_theirs")).filter((r) => r.outcome === "succeeded").length < 5) {
        if (Date.now() > deadline) throw new Error("the general worker did not run the other jobs");
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(await listJobs(db)).toEqual([]);
    } finally {
      await general.stop();
    }
  });
});
