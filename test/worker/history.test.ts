import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setTimeout } from "node:timers/promises";
import { z } from "zod";
import { defineTask, resolveTask, skipped } from "../../src/worker/task.ts";
import { REDACTED } from "../../src/worker/redact.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { createTestDb, drainJobs, jobRuns, listJobs, makeJobsDue, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

const calls: unknown[] = [];
let lateDone: () => void;
const late = {
  signalAborted: null as boolean | null,
  queryError: null as string | null,
  finished: new Promise<void>((r) => (lateDone = r)),
  done: () => lateDone(),
};
const tasks = [
  resolveTask("t_ok", defineTask({
    description: "succeeds",
    payload: z.object({ n: z.number().optional() }).loose(),
    async run(payload) {
      calls.push(payload);
      return { done: true };
    },
  })),
  resolveTask("t_fail", defineTask({
    description: "always throws",
    payload: z.object({}),
    async run() {
      throw new Error("boom");
    },
  })),
  resolveTask("t_slow", defineTask({
    description: "overruns its soft time limit; its wait ends with the abort signal's reason",
    payload: z.object({}),
    softTimeLimitMs: 100,
    timeLimitMs: 5000,
    async run(_p, { signal }) {
      await setTimeout(10_000, undefined, { signal });
    },
  })),
  resolveTask("t_stubborn", defineTask({
    description: "ignores its abort signal until the hard limit",
    payload: z.object({}),
    softTimeLimitMs: 50,
    timeLimitMs: 150,
    async run() {
      await setTimeout(3000);
    },
  })),
  resolveTask("t_winds_down", defineTask({
    description: "stops cleanly at its soft limit and reports how far it got",
    payload: z.object({}),
    softTimeLimitMs: 100,
    timeLimitMs: 5000,
    async run(_p, { signal, query }) {
      let rounds = 0;
      while (!signal.aborted && rounds < 1000) {
        rounds++;
        await setTimeout(10);
      }
      const { rows } = await query<{ ok: number }>("select 1 as ok");
      return { rounds, reason: (signal.reason as Error).name, queryAfterSoftLimit: rows[0]!.ok };
    },
  })),
  resolveTask("t_ignores_limit", defineTask({
    description: "ignores its time limit and only then looks at its signal and the database",
    payload: z.object({}),
    timeLimitMs: 100,
    async run(_p, ctx) {
      await setTimeout(400);
      late.signalAborted = ctx.signal.aborted;
      late.queryError = await ctx.query("select 1").then(() => null, (e: Error) => e.name);
      late.done();
    },
  })),
  resolveTask("t_weird_result", defineTask({
    description: "returns values jsonb cannot hold as they are",
    payload: z.object({}),
    async run() {
      return { big: 12345678901234567890n, text: "a\u0000b", nested: { token: "secret-value" } };
    },
  })),
  resolveTask("t_skip", defineTask({
    description: "has nothing to do",
    payload: z.object({}),
    async run() {
      return skipped("the row no longer applies");
    },
  })),
  resolveTask("t_strict", defineTask({
    description: "needs an id",
    payload: z.object({ id: z.number().int() }),
    async run() {
      throw new Error("must not run with an invalid payload");
    },
  })),
];

async function addJob(task: string, payload: unknown = {}, maxAttempts = 25) {
  const { rows } = await db.pool.query<{ id: string }>(
    "select (graphile_worker.add_job($1, $2::json, max_attempts := $3)).id::text as id",
    [task, JSON.stringify(payload), maxAttempts],
  );
  return rows[0]!.id;
}

describe("job history", () => {
  it("records a successful run with its result and duration, and the job leaves the queue", async () => {
    const id = await addJob("t_ok", { n: 1 });
    await drainJobs(db, tasks);
    const runs = (await jobRuns(db, "t_ok")).filter((r) => r.job_id === id);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ outcome: "succeeded", attempt: 1, error: null, result: { done: true } });
    expect(runs[0]!.duration_ms).toBeGreaterThanOrEqual(0);
    expect((await listJobs(db)).find((j) => j.id === id)).toBeUndefined();
  });

  it("records a failure as failed_retrying, then failed_permanently on the last attempt", async () => {
    const id = await addJob("t_fail", {}, 2);
    await drainJobs(db, tasks);
    let runs = (await jobRuns(db, "t_fail")).filter((r) => r.job_id === id);
    expect(runs.map((r) => r.outcome)).toEqual(["failed_retrying"]);
    expect(runs[0]!.error).toBe("boom");
    // The retry is scheduled in the future (backoff); make it due instead of waiting.
    await makeJobsDue(db);
    await drainJobs(db, tasks);
    runs = (await jobRuns(db, "t_fail")).filter((r) => r.job_id === id);
    expect(runs.map((r) => [r.attempt, r.outcome])).toEqual([
      [1, "failed_retrying"],
      [2, "failed_permanently"],
    ]);
    const job = (await listJobs(db)).find((j) => j.id === id);
    expect(job).toMatchObject({ attempts: 2, max_attempts: 2, last_error: "boom", locked_by: null });
  });

  it("fires the abort signal at the soft time limit: a task whose I/O then throws is recorded as timed_out and retried", async () => {
    const id = await addJob("t_slow", {}, 2);
    await drainJobs(db, tasks);
    const runs = (await jobRuns(db, "t_slow")).filter((r) => r.job_id === id);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.outcome).toBe("timed_out");
    expect(runs[0]!.error).toMatch(/soft time limit of 100 ms/);
    // Ended by the soft limit, long before the hard one (5 s) or its own wait (10 s).
    expect(runs[0]!.duration_ms).toBeLessThan(4000);
    expect((await listJobs(db)).find((j) => j.id === id)).toMatchObject({ attempts: 1 });
  });

  it("fails a task that ignores its abort signal at the hard time limit as timed_out", async () => {
    const id = await addJob("t_stubborn", {}, 1);
    await drainJobs(db, tasks);
    const runs = (await jobRuns(db, "t_stubborn")).filter((r) => r.job_id === id);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.outcome).toBe("timed_out");
    expect(runs[0]!.error).toMatch(/exceeded its time limit of 150 ms/);
    expect(runs[0]!.duration_ms).toBeLessThan(2900);
  });

  it("lets a task that stops cleanly at its soft limit finish: the signal's reason says why, and queries still work", async () => {
    const id = await addJob("t_winds_down", {}, 1);
    await drainJobs(db, tasks);
    const [run] = (await jobRuns(db, "t_winds_down")).filter((r) => r.job_id === id);
    expect(run).toMatchObject({ outcome: "succeeded", result: { reason: "TaskSoftTimeoutError", queryAfterSoftLimit: 1 } });
    expect((run!.result as { rounds: number }).rounds).toBeLessThan(1000);
  });

  it("after the time limit a task sees its signal aborted and its database helpers refuse new queries", async () => {
    const id = await addJob("t_ignores_limit", {}, 1);
    await drainJobs(db, tasks);
    await late.finished;
    expect(late).toMatchObject({ signalAborted: true, queryError: "TaskTimeoutError" });
    const [run] = (await jobRuns(db, "t_ignores_limit")).filter((r) => r.job_id === id);
    expect(run!.outcome).toBe("timed_out");
  });

  it("stores results jsonb cannot hold as they are: BigInts as strings, NUL characters removed, secrets redacted", async () => {
    const id = await addJob("t_weird_result");
    await drainJobs(db, tasks);
    const [run] = (await jobRuns(db, "t_weird_result")).filter((r) => r.job_id === id);
    expect(run).toMatchObject({ outcome: "succeeded", result: { big: "12345678901234567890", text: "ab", nested: { token: REDACTED } } });
  });

  it("records a job that no longer applies as skipped, with the reason", async () => {
    const id = await addJob("t_skip");
    await drainJobs(db, tasks);
    const [run] = (await jobRuns(db, "t_skip")).filter((r) => r.job_id === id);
    expect(run).toMatchObject({ outcome: "skipped", result: { skipped: "the row no longer applies" } });
  });

  it("fails an invalid payload permanently on the first attempt without running the task", async () => {
    const id = await addJob("t_strict", { id: "not a number" });
    await drainJobs(db, tasks);
    const runs = (await jobRuns(db, "t_strict")).filter((r) => r.job_id === id);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.outcome).toBe("failed_permanently");
    expect(runs[0]!.error).toMatch(/^Invalid payload: id:/);
    expect((await listJobs(db)).find((j) => j.id === id)).toBeUndefined();
  });

  it("redacts secret-looking keys from the recorded payload at any depth", async () => {
    const id = await addJob("t_ok", { n: 2, token: "raw-token", nested: { apiKey: "k", list: [{ password: "p", keep: 1 }] } });
    await drainJobs(db, tasks);
    const [run] = (await jobRuns(db, "t_ok")).filter((r) => r.job_id === id);
    expect(run!.payload).toEqual({ n: 2, token: REDACTED, nested: { apiKey: REDACTED, list: [{ password: REDACTED, keep: 1 }] } });
    // The task itself still received the real payload.
    expect(calls).toContainEqual({ n: 2, token: "raw-token", nested: { apiKey: "k", list: [{ password: "p", keep: 1 }] } });
  });

  it("leaves no run marked running once the jobs are done", async () => {
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.job_runs where outcome = 'running'");
    expect(rows[0].n).toBe(0);
  });

  it("writes the last runs' history as soon as the queue runs dry, not after the flush delay", async () => {
    const config = testConfig(db, { JOB_HISTORY_FLUSH_MS: "10000", WORKER_POLL_INTERVAL_MS: "200" });
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config, tasks, log: testLog, crontabFile: null });
    try {
      const { rows } = await db.pool.query<{ id: string }>("select (graphile_worker.add_job('t_ok', json_build_object('n', 77))).id::text");
      const started = Date.now();
      let runs: Awaited<ReturnType<typeof jobRuns>> = [];
      while (Date.now() - started < 8000) {
        runs = (await jobRuns(db, "t_ok")).filter((r) => r.job_id === rows[0]!.id);
        if (runs.length) break;
        await setTimeout(50);
      }
      expect(runs.map((r) => r.outcome)).toEqual(["succeeded"]);
      // Well inside the 10 s flush delay: written when the next fetch found the queue empty.
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await worker.stop();
    }
  });
});
