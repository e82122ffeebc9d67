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
let longFinished = false;
let heldStarted: () => void;
const heldStartedOnce = new Promise<void>((r) => (heldStarted = r));
let releaseHeld: () => void;
const heldReleased = new Promise<void>((r) => (releaseHeld = r));
let blockedStarted: () => void;
const blockedStartedOnce = new Promise<void>((r) => (blockedStarted = r));
let unblock: () => void;
const unblocked = new Promise<void>((r) => (unblock = r));
let stubborn = true;
let stubbornStarted: () => void;
const stubbornStartedOnce = new Promise<void>((r) => (stubbornStarted = r));
let outageStarted: () => void;
const outageStartedOnce = new Promise<void>((r) => (outageStarted = r));
let releaseOutage: () => void;
const outageReleased = new Promise<void>((r) => (releaseOutage = r));
let outageRuns = 0;
const tasks = [
  resolveTask("t_finishes_during_shutdown", defineTask({
    description: "takes a while, and finishes after shutdown has begun",
    payload: z.object({}),
    async run() {
      runs++;
      started();
      await new Promise((r) => setTimeout(r, 3000));
      longFinished = true;
      return { finished: true };
    },
  })),
  resolveTask("t_quick", defineTask({ description: "no-op", payload: z.object({}), async run() {} })),
  resolveTask("t_holds_the_slot", defineTask({
    description: "keeps the only slot busy while the rest of its batch waits in the local queue",
    payload: z.object({}),
    async run() {
      heldStarted();
      await heldReleased;
    },
  })),
  resolveTask("t_ignores_its_signal", defineTask({
    description: "the first time, runs for a minute whatever it is told; then at once",
    payload: z.object({}),
    async run() {
      if (!stubborn) return { quick: true };
      stubbornStarted();
      await new Promise((r) => setTimeout(r, 60_000).unref());
    },
  })),
  resolveTask("t_finishes_in_an_outage", defineTask({
    description: "finishes once the test lets it, while the worker's connections are being cut",
    payload: z.object({}),
    async run() {
      outageStarted();
      await outageReleased;
      outageRuns++;
    },
  })),
  resolveTask("t_blocks", defineTask({
    description: "runs until the test lets it finish",
    payload: z.object({}),
    async run() {
      blockedStarted();
      await unblocked;
    },
  })),
];

describe("graceful shutdown", () => {
  it("completes a job that finishes during shutdown, returns unstarted jobs unlocked, and re-runs nothing", async () => {
    await db.pool.query("select graphile_worker.add_job('t_finishes_during_shutdown', '{}'::json, max_attempts := 1)");
    // Queued behind it on a single-slot worker with a local queue: fetched (and locked) in a batch, never started.
    await db.pool.query("select graphile_worker.add_job('t_quick', '{}'::json, run_at := now() + interval '1 second') from generate_series(1, 20)");
    const config = testConfig(db, { WORKER_CONCURRENCY: "1", WORKER_LOCAL_QUEUE_SIZE: "50", WORKER_POLL_INTERVAL_MS: "100" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    await startedOnce;
    // The quick jobs become due and are fetched (locked) into the local queue meanwhile.
    const fetchedBy = Date.now() + 10_000;
    while ((await listJobs(db)).filter((j) => j.task_identifier === "t_quick" && j.locked_by !== null).length < 20) {
      if (Date.now() > fetchedBy) throw new Error("the quick jobs were never fetched");
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(longFinished).toBe(false);
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

  it("hands back, unlocked, the jobs waiting in the local queue when shutdown begins", async () => {
    // One fetch locks the whole batch; the single slot takes the first and the rest wait in the
    // local queue. graphile-worker 0.18 cannot hand those back at shutdown (its local queue throws
    // "Cannot background something when the queue is already released") and leaves them locked
    // for four hours; the clean stop releases them.
    await db.pool.query(
      `select graphile_worker.add_job('t_holds_the_slot', '{}'::json, run_at := now() - interval '1 minute');
       select graphile_worker.add_job('t_quick', '{}'::json) from generate_series(1, 10)`,
    );
    const config = testConfig(db, { WORKER_CONCURRENCY: "1", WORKER_LOCAL_QUEUE_SIZE: "50", WORKER_POLL_INTERVAL_MS: "100" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    await heldStartedOnce;
    const { rows: held } = await db.pool.query("select count(*)::int as n from graphile_worker.jobs where task_identifier = 't_quick' and locked_by is not null");
    expect(held[0].n).toBe(10);
    // Shutdown begins while the slot is busy and the ten wait in the local queue.
    const stopped = worker.stop();
    await new Promise((r) => setTimeout(r, 50));
    releaseHeld();
    await stopped;

    const jobs = await listJobs(db);
    expect(jobs.filter((j) => j.task_identifier === "t_holds_the_slot")).toEqual([]);
    expect(jobs.filter((j) => j.task_identifier === "t_quick")).toHaveLength(10);
    expect(jobs.filter((j) => j.locked_by !== null || j.attempts !== 0)).toEqual([]);
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.worker_processes");
    expect(rows[0].n).toBe(0);
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs))");
  });

  it("a clean stop during an outage waits for the completion being retried, instead of handing its job back", async () => {
    await db.pool.query("select graphile_worker.add_job('t_finishes_in_an_outage', '{}'::json)");
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db), tasks, log: testLog, crontabFile: null });
    await outageStartedOnce;
    // For 5 s every connection of the worker's job pool is cut as soon as it is seen (the history
    // and heartbeat pools are left alone): the job finishes in the middle of it, and its completion
    // is retried until the cuts stop. The stop must wait for it rather than hand the job back
    // (unlocked, it would run again).
    const cuts = db.pool
      .query(`do $$
        declare
          v_until timestamptz := clock_timestamp() + interval '5 seconds';
        begin
          while clock_timestamp() < v_until loop
            perform pg_stat_clear_snapshot();
            perform pg_terminate_backend(pid) from pg_stat_activity
            where datname = current_database() and application_name = 'hourglass-worker';
            perform pg_sleep(0.001);
          end loop;
        end $$`);
    const stopped = worker.stop();
    await new Promise((r) => setTimeout(r, 200));
    releaseOutage();
    await Promise.all([stopped, cuts]);
    expect(outageRuns).toBe(1);
    expect((await jobRuns(db, "t_finishes_in_an_outage")).map((r) => r.outcome)).toEqual(["succeeded"]);
    // Completed, not handed back to run again; and the stop was clean (its heartbeat removed).
    expect((await listJobs(db)).filter((j) => j.task_identifier === "t_finishes_in_an_outage")).toEqual([]);
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.worker_processes");
    expect(rows[0].n).toBe(0);
  });

  it("a stop that runs out of SHUTDOWN_TIMEOUT_MS records the running job abandoned and leaves its heartbeat; a live worker recovers the job", async () => {
    const { rows: added } = await db.pool.query("select (graphile_worker.add_job('t_ignores_its_signal', '{}'::json)).id::text as id");
    const jobId = added[0].id as string;
    const doomed = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, { SHUTDOWN_TIMEOUT_MS: "1000", WORKER_DEAD_AFTER_MS: "3000" }), tasks, log: testLog, crontabFile: null });
    await stubbornStartedOnce;
    await doomed.stop();
    const runs = async () => (await jobRuns(db, "t_ignores_its_signal")).map((r) => [r.job_id, r.outcome]);
    expect(await runs()).toEqual([[jobId, "abandoned"]]);
    const { rows: beats } = await db.pool.query("select id from app_public.worker_processes");
    expect(beats).toEqual([{ id: doomed.heartbeat.id }]);
    expect((await listJobs(db)).filter((j) => j.id === jobId).map((j) => j.locked_by)).toEqual([doomed.heartbeat.id]);

    stubborn = false;
    const live = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, { WORKER_DEAD_AFTER_MS: "1000" }), tasks, log: testLog, crontabFile: null });
    try {
      const deadline = Date.now() + 15_000;
      while ((await runs()).length < 2) {
        if (Date.now() > deadline) throw new Error("the abandoned job was not recovered");
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await runs()).toEqual([[jobId, "abandoned"], [jobId, "succeeded"]]);
    } finally {
      await live.stop();
    }
    const { rows: after } = await db.pool.query("select count(*)::int as n from app_public.worker_processes");
    expect(after[0].n).toBe(0);
  }, 30_000);

  it("app_private.forget_worker unlocks the jobs a pool still holds; the unstarted ones get their attempt back", async () => {
    await db.pool.query("select graphile_worker.add_job('t_blocks', '{}'::json, run_at := now() - interval '1 minute')");
    const { rows: added } = await db.pool.query<{ id: string }>(
      "select (graphile_worker.add_job('t_quick', '{}'::json, max_attempts := 1)).id::text from generate_series(1, 5)",
    );
    const ids = new Set(added.map((r) => r.id));
    const config = testConfig(db, { WORKER_CONCURRENCY: "1", WORKER_LOCAL_QUEUE_SIZE: "50", WORKER_POLL_INTERVAL_MS: "100" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    try {
      await blockedStartedOnce;
      const poolId = worker.heartbeat.id!;
      const quick = async () => (await listJobs(db)).filter((j) => ids.has(j.id));
      expect((await quick()).map((j) => [j.locked_by, j.attempts])).toEqual(Array(5).fill([poolId, 1]));
      // As the clean stop calls it (here while the pool is alive, to see the hand-back alone),
      // naming the five quick jobs as never started.
      const { rows } = await db.pool.query("select app_private.forget_worker($1, $2::bigint[]) as released", [poolId, [...ids]]);
      expect(rows[0].released).toBe(6);
      expect((await quick()).map((j) => [j.locked_by, j.attempts])).toEqual(Array(5).fill([null, 0]));
      // The running one is unlocked (in a clean stop it would not be running) with its attempt counted.
      const { rows: blocked } = await db.pool.query("select locked_by, attempts from graphile_worker.jobs where task_identifier = 't_blocks'");
      expect(blocked).toEqual([{ locked_by: null, attempts: 1 }]);
      const { rows: beats } = await db.pool.query("select count(*)::int as n from app_public.worker_processes where id = $1", [poolId]);
      expect(beats[0].n).toBe(0);
    } finally {
      unblock();
      await worker.stop();
    }
  });
});
