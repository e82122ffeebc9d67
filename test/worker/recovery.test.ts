// Crash recovery with real processes: a worker SIGKILLed in the middle of 200 jobs leaves them
// locked (graphile-worker alone would wait four hours); a live worker notices the missing
// heartbeats and releases them, and every job completes well within a minute of the kill.
import os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger, type Logger } from "../../src/log.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask, type ResolvedTask } from "../../src/worker/task.ts";
import { z } from "zod";
import { createTestDb, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { slowTask, spawnWorkerProcess } from "../helpers/worker-process.ts";
import { startPgProxy } from "../helpers/proxy.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
  await db.pool.query(`
    insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_slow', 'test', 0, 5, 10000);
    create table public.t_done (n integer primary key, worker text not null, runs integer not null default 1, at timestamptz not null default clock_timestamp());`);
});
afterAll(async () => {
  await db?.drop();
});

const count = async (sql: string, params: unknown[] = []) => (await db.pool.query(sql, params)).rows[0].n as number;

/** A worker in this process (no crontab) with these settings. */
const inProcessWorker = (env: Record<string, string>, tasks: ResolvedTask[] = [slowTask], log: Logger = testLog) =>
  startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db, env), tasks, log, crontabFile: null });

/**
 * A task that runs for `ms` (ending early on its abort signal), registered in app_private.tasks;
 * `running` resolves when a job of it starts.
 */
async function timedTask(identifier: string, ms: number) {
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const task = resolveTask(
    identifier,
    defineTask({
      description: `runs for ${ms} ms (test)`,
      payload: z.object({}),
      async run(_payload, { signal }) {
        started();
        await new Promise((resolve, reject) => {
          const t = setTimeout(resolve, ms);
          signal.addEventListener("abort", () => (clearTimeout(t), reject(new Error("aborted"))), { once: true });
        });
      },
    }),
  );
  await db.pool.query(
    "insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ($1, 'test', 0, 1, 20000) on conflict do nothing",
    [identifier],
  );
  return { task, running };
}

describe("crash recovery", () => {
  it("a SIGKILLed worker's 200 jobs all complete, the orphans within a minute of the kill, and its running history is marked abandoned", async () => {
    await db.pool.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row('t_slow', json_build_object('n', g), null, null, 5, null, null, null)::graphile_worker.job_spec from generate_series(1, 200) g))`,
    );
    const dead = { WORKER_CONCURRENCY: "20", WORKER_DEAD_AFTER_MS: "3000", SLOW_MS: "400", JOB_HISTORY_FLUSH_MS: "20" };
    const { child, poolId } = await spawnWorkerProcess(db, dead);
    // Let it get going: some jobs done, twenty running, the rest locked in its local queue.
    const goingBy = Date.now() + 30_000;
    while ((await count("select count(*)::int as n from public.t_done")) < 30) {
      if (Date.now() > goingBy) throw new Error("the worker process did not get going");
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGKILL");
    const killedAt = Date.now();
    await new Promise((r) => child.once("exit", r));
    const locked = await count("select count(*)::int as n from graphile_worker.jobs where locked_by = $1", [poolId]);
    expect(locked).toBeGreaterThan(0);

    const survivor = await inProcessWorker({ WORKER_CONCURRENCY: "20", WORKER_DEAD_AFTER_MS: "3000" });
    try {
      while ((await count("select count(*)::int as n from public.t_done")) < 200) {
        if (Date.now() - killedAt > 60_000) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await survivor.stop();
    }
    expect(await count("select count(*)::int as n from public.t_done")).toBe(200);
    expect(await count("select count(*)::int as n from graphile_worker.jobs")).toBe(0);
    const lastDone = (await db.pool.query("select max(at) as at from public.t_done")).rows[0].at as Date;
    expect(lastDone.getTime() - killedAt).toBeLessThan(60_000);
    // Jobs that were running at the kill ran again on the survivor; none ran more than twice.
    expect(await count("select count(*)::int as n from public.t_done where runs > 2")).toBe(0);
    expect(await count("select count(*)::int as n from app_public.job_runs where outcome = 'abandoned' and error like '%stopped heartbeating%'")).toBeGreaterThan(0);
    expect(await count("select count(*)::int as n from app_public.job_runs where outcome = 'running'")).toBe(0);
    expect(await count("select count(*)::int as n from app_public.worker_processes")).toBe(0);
    // The spec allows a minute after the kill; the test's own limit must not be shorter.
  }, 120_000);

  it("a live worker's heartbeat is never taken for dead; a stale one is removed by the live worker's own recovery loop", async () => {
    const live = await inProcessWorker({ WORKER_DEAD_AFTER_MS: "1000" });
    try {
      // A stale heartbeat from a process that is gone, and the live worker's own: the live
      // worker's recovery loop (every third of a second here) removes only the stale one.
      await db.pool.query("insert into app_public.worker_processes (id, host, pid, label, last_seen_at) values ('pool-gone', 'h', 1, 'h:1', now() - interval '1 hour')");
      const deadline = Date.now() + 5000;
      while ((await count("select count(*)::int as n from app_public.worker_processes where id = 'pool-gone'")) > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 1500)); // longer than WORKER_DEAD_AFTER_MS
      const { rows: alive } = await db.pool.query("select id from app_public.worker_processes");
      expect(alive).toEqual([{ id: live.heartbeat.id }]);
    } finally {
      await live.stop();
    }
    expect(await count("select count(*)::int as n from app_public.worker_processes")).toBe(0);
  });

  it("a worker with a longer WORKER_DEAD_AFTER_MS than the judge's is judged by its own: not released while it beats on time", async () => {
    const live = await inProcessWorker({ WORKER_DEAD_AFTER_MS: "1000" });
    try {
      // Both silent for longer than the judge's 1 s. One set 10 minutes (it beats every 100 s) and
      // was seen 20 s ago, which is on time; the other set 10 s and was seen a minute ago.
      await db.pool.query(`insert into app_public.worker_processes (id, host, pid, label, last_seen_at, dead_after) values
        ('pool-patient', 'h', 1, 'h:1', now() - interval '20 seconds', interval '10 minutes'),
        ('pool-gone', 'h', 2, 'h:2', now() - interval '1 minute', interval '10 seconds')`);
      const deadline = Date.now() + 5000;
      while ((await count("select count(*)::int as n from app_public.worker_processes where id = 'pool-gone'")) > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 1500)); // more recovery rounds than enough
      const { rows } = await db.pool.query("select id, extract(epoch from dead_after)::float8 as dead_after_s from app_public.worker_processes order by id");
      // The live worker's own row records its setting.
      expect(rows).toEqual(
        [{ id: live.heartbeat.id, dead_after_s: 1 }, { id: "pool-patient", dead_after_s: 600 }].sort((a, b) => (a.id! < b.id! ? -1 : 1)),
      );
    } finally {
      await live.stop();
      await db.pool.query("delete from app_public.worker_processes");
    }
  });

  it("a worker whose runner dies (a completion that fails for good) says so, stops beating, and its stop hands the job back", async () => {
    const lines: string[] = [];
    // With the local queue (the default), as deployed: graphile-worker batches completions and stops
    // its pool when one fails for good. (Without it, such a failure is an unhandled rejection,
    // which ends the process.)
    const log = createLogger({ level: "debug", format: "json", write: (line) => lines.push(line) });
    const worker = await inProcessWorker({ WORKER_DEAD_AFTER_MS: "3000" }, [slowTask], log);
    const locker = await db.pool.connect();
    let died = false;
    void worker.died.then(() => (died = true));
    try {
      const { rows } = await db.pool.query("select (graphile_worker.add_job('t_slow', json_build_object('n', 5001), job_key := 'dies')).id");
      const jobId = rows[0].id as string;
      const waitFor = async (what: string, check: () => Promise<boolean> | boolean, ms = 10_000) => {
        const deadline = Date.now() + ms;
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await waitFor("the job to start", async () => (await count("select count(*)::int as n from graphile_worker.jobs where id = $1 and locked_by is not null", [jobId])) === 1);
      // A DBA's transaction holds the job's row while it runs (remove_job marks a running job not to
      // run again); its completion waits, and is cancelled.
      await locker.query("begin");
      await locker.query("select graphile_worker.remove_job('dies')");
      const blocked = async () =>
        (await db.pool.query("select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> $1", [(locker as unknown as { processID: number }).processID])).rows;
      await waitFor("the completion to wait on the lock", async () => (await blocked()).length > 0);
      for (const { pid } of await blocked()) await db.pool.query("select pg_cancel_backend($1)", [pid]);
      await locker.query("rollback");

      await waitFor("the worker to report its death", () => died);
      expect(worker.isRunning()).toBe(false);
      const logged = lines.map((l) => JSON.parse(l) as { level: string; msg: string; jobs?: unknown });
      expect(logged.find((l) => l.level === "error" && l.msg.startsWith("the worker stopped by itself"))).toBeDefined();
      // graphile-worker's report of the failed batch names the job, without its payload.
      expect(logged.find((l) => l.msg.startsWith("Failed to complete jobs"))?.jobs).toEqual([jobId]);
      expect(lines.filter((l) => l.includes("5001"))).toEqual([]);
      // No more beats (every 500 ms at 3 s): crash recovery elsewhere can release what it holds.
      const seen = async () => (await db.pool.query("select last_seen_at from app_public.worker_processes where id = $1", [worker.heartbeat.id])).rows[0]?.last_seen_at as Date;
      const before = await seen();
      await new Promise((r) => setTimeout(r, 1200));
      expect(await seen()).toEqual(before);
      expect(await count("select count(*)::int as n from graphile_worker.jobs where id = $1 and locked_by is not null", [jobId])).toBe(1);
      // Its stop hands the job back at once (it ran, but its completion never landed: at least once).
      await worker.stop();
      expect(await count("select count(*)::int as n from graphile_worker.jobs where id = $1 and locked_by is null", [jobId])).toBe(1);
      expect(await count("select count(*)::int as n from app_public.worker_processes")).toBe(0);
    } finally {
      locker.release();
      await worker.stop();
      await db.pool.query("select graphile_worker.remove_job('dies')");
    }
  });

  it("beats on time while its jobs hold every connection of the task pool", async () => {
    // Each job waits on the database four times at once, for 4 s: two jobs ask for 8 connections
    // of a pool of 5 (concurrency + 3) for longer than WORKER_DEAD_AFTER_MS.
    const hog = resolveTask(
      "t_hog",
      defineTask({
        description: "holds database connections (test)",
        payload: z.object({}),
        async run(_payload, { query }) {
          await Promise.all(Array.from({ length: 4 }, () => query("select pg_sleep(4)")));
        },
      }),
    );
    await db.pool.query("insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_hog', 'test', 0, 1, 20000) on conflict do nothing");
    const worker = await inProcessWorker({ WORKER_DEAD_AFTER_MS: "3000", WORKER_CONCURRENCY: "2" }, [hog]);
    try {
      await db.pool.query("select graphile_worker.add_job('t_hog', '{}'), graphile_worker.add_job('t_hog', '{}')");
      const deadline = Date.now() + 10_000;
      while (worker.pool.waitingCount === 0 || worker.pool.totalCount < 5) {
        if (Date.now() > deadline) throw new Error("the jobs never filled the pool");
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(worker.pool.waitingCount).toBeGreaterThan(0);
      // While the pool is full (and queries wait for it), the heartbeat stays fresh: never older
      // than two beat intervals (500 ms each here).
      let stalest = 0;
      for (let i = 0; i < 30; i++) {
        stalest = Math.max(stalest, await count("select (extract(epoch from now() - last_seen_at) * 1000)::int as n from app_public.worker_processes where id = $1", [worker.heartbeat.id]));
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(worker.pool.waitingCount).toBeGreaterThan(0);
      expect(stalest).toBeLessThan(1000);
    } finally {
      await worker.stop();
    }
  }, 30_000);

  it("after a database outage (every heartbeat old), nobody is declared dead until the judge has beaten again for WORKER_DEAD_AFTER_MS", async () => {
    await db.pool.query("delete from app_public.worker_processes");
    await db.pool.query(
      `insert into app_public.worker_processes (id, host, pid, label, last_seen_at, beating_since)
       values ('pool-a', 'a', 1, 'a:1', now() - interval '2 minutes', now() - interval '1 hour'),
              ('pool-b', 'b', 1, 'b:1', now() - interval '2 minutes', now() - interval '1 hour')`,
    );
    const recover = async () =>
      (await db.pool.query("select worker_id from app_private.recover_dead_workers(interval '30 seconds', 'pool-a')")).rows.map((r) => r.worker_id);
    // pool-a's own heartbeat is as old as pool-b's: it cannot judge.
    expect(await recover()).toEqual([]);
    // pool-a beats again after the gap: its beating_since restarts, so it still cannot judge.
    await db.pool.query("select app_private.heartbeat('pool-a', 'a', 1, 'a:1', null, 0, interval '15 seconds')");
    expect(await recover()).toEqual([]);
    // Thirty seconds of beating later (time through data), pool-b has had its chance and is dead.
    await db.pool.query("update app_public.worker_processes set beating_since = now() - interval '31 seconds' where id = 'pool-a'");
    expect(await recover()).toEqual(["pool-b"]);
    expect((await db.pool.query("select id from app_public.worker_processes")).rows).toEqual([{ id: "pool-a" }]);
    await db.pool.query("delete from app_public.worker_processes");
  });

  it("a start that fails once the runner has begun (no connection slots for its pool) stops it and leaves no job locked", async () => {
    await db.pool.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row('t_slow', json_build_object('n', g), null, null, 5, null, null, null)::graphile_worker.job_spec from generate_series(70001, 70040) g))`,
    );
    const queued = "select count(*)::int as n from graphile_worker.jobs where task_identifier = 't_slow'";
    const beats = "select count(*)::int as n from app_public.worker_processes";
    const beatsBefore = await count(beats);
    const proxy = await startPgProxy(new URL(db.ownerUrl));
    try {
      // Enough for graphile-worker's own start (its LISTEN and a fetch), not for a pool of 8.
      proxy.limit("hourglass-worker", 3);
      const start = startWorker({ ownerUrl: proxy.url(db.ownerUrl), config: testConfig(db, { WORKER_CONCURRENCY: "8" }), tasks: [slowTask], log: testLog, crontabFile: null });
      await expect(start).rejects.toThrow();
      const left = await count(queued);
      // Stopped: nothing locked, no heartbeat left behind, and no job taken after the failure.
      await new Promise((r) => setTimeout(r, 1500));
      expect(await count("select count(*)::int as n from graphile_worker.jobs where locked_at is not null")).toBe(0);
      expect(await count(beats)).toBe(beatsBefore);
      expect(await count(queued)).toBe(left);
      expect(left).toBeGreaterThan(0);
    } finally {
      await proxy.close();
      await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where task_identifier = 't_slow'))");
    }
  });

  it("a process on a dead one's host and pid keeps the runs it started before its first heartbeat landed", async () => {
    // A restarted container: same host name, same pid. Its predecessor was SIGKILLed an hour ago.
    await db.pool.query(
      `insert into app_public.worker_processes (id, host, pid, label, started_at, last_seen_at, beating_since)
       values ('pool-predecessor', $1, $2::integer, $1 || ':' || $2::text, now() - interval '2 hours', now() - interval '1 hour', now() - interval '2 hours')`,
      [os.hostname(), process.pid],
    );
    const { task: long, running } = await timedTask("t_long", 6000);
    const { rows } = await db.pool.query("select (graphile_worker.add_job('t_long', '{}')).id::text as id");
    const jobId = rows[0].id as string;
    // The first heartbeats wait (and time out) until the job has started.
    const locker = await db.pool.connect();
    await locker.query("begin");
    await locker.query("lock table app_public.worker_processes in exclusive mode");
    const worker = await inProcessWorker({ WORKER_DEAD_AFTER_MS: "1000", JOB_HISTORY_FLUSH_MS: "20" }, [long]);
    try {
      await running;
      await locker.query("commit");
      // Once it has beaten for WORKER_DEAD_AFTER_MS it recovers the predecessor, while the job still runs.
      const outcome = () => db.pool.query("select outcome from app_public.job_runs where job_id = $1", [jobId]).then((r) => r.rows[0]?.outcome as string | undefined);
      const deadline = Date.now() + 15_000;
      while ((await count("select count(*)::int as n from app_public.worker_processes where id = 'pool-predecessor'")) > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await count("select count(*)::int as n from app_public.worker_processes where id = 'pool-predecessor'")).toBe(0);
      // The predecessor was recovered while the job still ran: the case in question.
      expect(await outcome()).toBe("running");
      while ((await outcome()) === "running" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await outcome()).toBe("succeeded");
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await worker.stop();
      await db.pool.query("delete from app_public.worker_processes where id = 'pool-predecessor'");
    }
  });

  it("a stop whose history cannot be written keeps its heartbeat, so recovery ends the runs left running", async () => {
    const { task: second, running } = await timedTask("t_second", 1000);
    const proxy = await startPgProxy(new URL(db.ownerUrl));
    const worker = await startWorker({
      ownerUrl: proxy.url(db.ownerUrl),
      config: testConfig(db, { WORKER_DEAD_AFTER_MS: "1000", JOB_HISTORY_FLUSH_MS: "20" }),
      tasks: [second],
      log: testLog,
      crontabFile: null,
    });
    let stopped = false;
    try {
      const { rows } = await db.pool.query("select (graphile_worker.add_job('t_second', '{}')).id::text as id");
      const jobId = rows[0].id as string;
      await running;
      const outcome = () => db.pool.query("select outcome from app_public.job_runs where job_id = $1", [jobId]).then((r) => r.rows[0]?.outcome as string | undefined);
      const deadline = Date.now() + 5000;
      while ((await outcome()) !== "running" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(await outcome()).toBe("running");
      // From now on the history writer cannot reach the database (its connection ended, new ones refused).
      proxy.limit("hourglass-history", 0);
      await db.pool.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'hourglass-history' and datname = current_database()");
      await worker.stop();
      stopped = true;
      // The job completed, but its run could not be recorded: the heartbeat stays for recovery.
      expect(await count("select count(*)::int as n from graphile_worker.jobs where id = $1", [jobId])).toBe(0);
      expect(await outcome()).toBe("running");
      expect(await count("select count(*)::int as n from app_public.worker_processes where id = $1", [worker.heartbeat.id])).toBe(1);
      // Silent past its WORKER_DEAD_AFTER_MS, it is judged by a live worker (beating for an hour).
      await new Promise((r) => setTimeout(r, 1200));
      await db.pool.query(
        "insert into app_public.worker_processes (id, host, pid, label, started_at, last_seen_at, beating_since) values ('pool-judge-2', 'j', 3, 'j:3', now() - interval '1 hour', now(), now() - interval '1 hour')",
      );
      const { rows: judged } = await db.pool.query("select worker_id, abandoned from app_private.recover_dead_workers(interval '1 second', 'pool-judge-2')");
      expect(judged).toEqual([{ worker_id: worker.heartbeat.id, abandoned: 1 }]);
      expect(await outcome()).toBe("abandoned");
    } finally {
      if (!stopped) await worker.stop();
      await proxy.close();
      await db.pool.query("delete from app_public.worker_processes where id in ('pool-judge-2', $1)", [worker.heartbeat.id]);
    }
  });

  it("a restarted process that reuses the dead one's host:pid keeps its own running history", async () => {
    await db.pool.query(
      `insert into app_public.worker_processes (id, host, pid, label, started_at, last_seen_at, beating_since) values
         ('pool-old', 'h', 1, 'h:1', now() - interval '1 hour', now() - interval '2 minutes', now() - interval '1 hour'),
         ('pool-new', 'h', 1, 'h:1', now() - interval '1 minute', now(), now() - interval '1 minute'),
         ('pool-judge', 'j', 2, 'j:2', now() - interval '1 hour', now(), now() - interval '1 hour')`,
    );
    await db.pool.query(
      `insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, outcome) values
         (gen_random_uuid(), 900001, 't_slow', 1, 5, 'h:1', now() - interval '30 minutes', 'running'),
         (gen_random_uuid(), 900002, 't_slow', 1, 5, 'h:1', now() - interval '30 seconds', 'running')`,
    );
    const { rows } = await db.pool.query("select worker_id, abandoned from app_private.recover_dead_workers(interval '30 seconds', 'pool-judge')");
    expect(rows).toEqual([{ worker_id: "pool-old", abandoned: 1 }]);
    const { rows: runs } = await db.pool.query("select job_id::text, outcome from app_public.job_runs where worker_id = 'h:1' order by job_id");
    expect(runs).toEqual([
      { job_id: "900001", outcome: "abandoned" },
      { job_id: "900002", outcome: "running" },
    ]);
    await db.pool.query("delete from app_public.worker_processes; delete from app_public.job_runs where worker_id = 'h:1'");
  });
});
