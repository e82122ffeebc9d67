// Runs graphile-worker with our own pool, our wrapped tasks and the crontab, and shuts it down
// without leaving a job locked.
//
// graphile-worker 0.18 can leave a job that completes during shutdown locked for four hours when
// the runner ends its own pool before the completion is written. We pass our own pool and end it
// only after the runner has fully stopped and the job history is flushed.
//
// It also treats a job completion (or failure) write that fails as fatal: its batcher's retry
// loop gives up after the first attempt and the worker pool starts shutting down "in an
// inconsistent state" — a shutdown that, in our runs, never finished: the process kept
// heartbeating while it ran nothing, and the job stayed locked for four hours. A Postgres restart
// or failover, or a terminated backend, drops every connection, so a completion in flight at that
// moment did exactly that (test/worker/outage.test.ts). Those writes are idempotent (delete by job
// id; update only where still locked by this pool), so when one loses its connection it is run
// again on a new one (retryOnConnectionLoss) instead; so is handing back unstarted jobs at
// shutdown, which graphile-worker does not retry either.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import os from "node:os";
import { run, type Runner, type TaskList, type WorkerEvents } from "graphile-worker";
import type pg from "pg";
import type { Config } from "../config.ts";
import { workerLogger, type Logger } from "../log.ts";
import { createPool, retryOnConnectionLoss, warmPool } from "../db/pool.ts";
import { HistoryWriter } from "./history.ts";
import { loadCrontab } from "./crontab.ts";
import { wrapTask } from "./wrap.ts";
import { createServices, type Services } from "./services.ts";
import { WakeScheduler } from "./wake.ts";
import { Heartbeat } from "./heartbeat.ts";
import type { ResolvedTask } from "./task.ts";

export interface WorkerOptions {
  ownerUrl: string;
  config: Config;
  tasks: readonly ResolvedTask[];
  log: Logger;
  /** Crontab file to read; null runs no cron entries (tests that drive jobs themselves). */
  crontabFile?: string | null;
  /** Services built by the caller (who then closes them); by default built here and closed on stop. */
  services?: Services;
}

export interface WorkerHandle {
  workerId: string;
  runner: Runner;
  pool: pg.Pool;
  history: HistoryWriter;
  /** Exact wake-ups for future jobs; null when WORKER_EXACT_WAKE=false. */
  wake: WakeScheduler | null;
  heartbeat: Heartbeat;
  /** True until the runner stops (by stop() or by a fatal error). */
  isRunning(): boolean;
  /**
   * Settles only if graphile-worker's runner stopped without stop() being called (its worker pool
   * died: a job's completion failed for a reason it does not retry, say). The process then runs no
   * jobs: it has stopped beating, so that crash recovery elsewhere releases what it holds, and its
   * owner should call stop() and exit (main.ts does, with status 1, for a supervisor to restart).
   */
  died: Promise<void>;
  /** Graceful: finish running jobs, return unstarted ones, write history, end the pool. */
  stop(): Promise<void>;
}

/** Resolves once no client of the pool is checked out (or after timeoutMs). */
async function untilIdle(pool: pg.Pool, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((pool.totalCount > pool.idleCount || pool.waitingCount > 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function selectTasks(all: readonly ResolvedTask[], only: readonly string[] | null): ResolvedTask[] {
  if (!only) return [...all];
  const known = new Set(all.map((t) => t.identifier));
  const unknown = only.filter((id) => !known.has(id));
  if (unknown.length) throw new Error(`WORKER_TASKS names unknown tasks: ${unknown.join(", ")} (known: ${[...known].join(", ")})`);
  return all.filter((t) => only.includes(t.identifier));
}

export async function startWorker(options: WorkerOptions): Promise<WorkerHandle> {
  const { config, log } = options;
  const w = config.worker;
  // host:pid and a suffix of its own: a restarted container comes back with the same host name and
  // pid, and crash recovery of its predecessor marks abandoned the runs under the predecessor's
  // label only, so the suffix keeps the new process's runs out of it (even the ones it starts
  // before its first heartbeat lands).
  const workerId = `${os.hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  const selected = selectTasks(options.tasks, w.tasks);
  const parsedCronItems =
    options.crontabFile === null ? [] : await loadCrontab(options.tasks, options.crontabFile ?? undefined);

  // Concurrency + the local queue's fetches + completion batches. A task that overruns its time
  // limit is failed at once, but a query it started would hold its connection: the longest time
  // limit among this worker's tasks bounds every statement and idle transaction on the pool.
  const longest = Math.max(...selected.map((t) => t.timeLimitMs), 30_000);
  const pool = createPool(
    options.ownerUrl,
    {
      max: w.concurrency + 3,
      // Kept open: a job that becomes due after a quiet spell should not wait for a new backend.
      min: w.concurrency,
      name: "worker",
      settings: `-c statement_timeout=${longest} -c idle_in_transaction_session_timeout=${longest}`,
    },
    log,
  );
  // graphile-worker's statements that complete, fail or hand back (on shutdown, where it does
  // not retry either) locked jobs, by their prepared-statement names: complete_job/,
  // complete_jobs/, complete_job_q/, fail_job/, fail_jobs/, fail_job_q/, return_job/, return_job_q/.
  let forced = false;
  retryOnConnectionLoss(pool, {
    retry: (name) => /^(complete_jobs?|complete_job_q|fail_jobs?|fail_job_q|return_job|return_job_q)\//.test(name),
    giveUp: () => forced,
    log,
  });
  // The history writer has one write in flight at a time, on its own connection (see history.ts).
  const historyPool = createPool(options.ownerUrl, { max: 1, name: "history", settings: "-c synchronous_commit=off" }, log);
  const history = new HistoryWriter(historyPool, { flushDelayMs: config.history.flushDelayMs, log: log.child({ component: "history" }) });
  let services: Services;
  let closeServices = () => {};
  try {
    if (options.services) {
      services = options.services;
    } else {
      const own = await createServices(config, log);
      services = own;
      closeServices = own.close;
    }
  } catch (err) {
    await Promise.all([pool.end(), historyPool.end()]);
    throw err;
  }
  const runtime = { history, log, workerId, config, services };
  const taskList: TaskList = Object.fromEntries(selected.map((t) => [t.identifier, wrapTask(t, runtime)]));

  const events: WorkerEvents = new EventEmitter();
  const wake = w.exactWake ? new WakeScheduler(pool, { log: log.child({ component: "wake" }), concurrency: w.concurrency }) : null;
  wake?.attach(events);
  // Heartbeats and crash recovery on connections of their own: a pool busy with jobs (or with the
  // queries of jobs that overran their time limit, until statement_timeout ends them) must not
  // delay a beat until the others take this live process for dead and run its jobs again.
  const heartbeatPool = createPool(
    options.ownerUrl,
    { max: 2, name: "heartbeat", settings: `-c statement_timeout=${w.deadAfterMs} -c idle_in_transaction_session_timeout=${w.deadAfterMs}` },
    log,
  );
  const heartbeat = new Heartbeat(heartbeatPool, {
    log: log.child({ component: "heartbeat" }),
    label: workerId,
    tasks: w.tasks,
    deadAfterMs: w.deadAfterMs,
    running: () => history.runningCount,
  });
  heartbeat.attach(events);
  // The jobs graphile-worker hands back at shutdown (fetched, never started): if its hand-back
  // does not land, the clean stop unlocks them and gives back their attempt (forget_worker).
  // (A flag, not `stopping`: graphile-worker can emit this synchronously inside runner.stop(),
  // before the promise is assigned.)
  let shuttingDown = false;
  const handingBack = new Set<string>();
  events.on("localQueue:returnJobs", ({ jobs }) => {
    if (shuttingDown) for (const job of jobs) handingBack.add(String(job.id));
  });
  // The local queue went to fetch its next batch: while the database answers, this process has
  // nothing to run, so that is when the finished runs' history is built and sent (after the
  // fetch's own query has gone out: setImmediate). See HistoryWriter.flushFinished.
  events.on("localQueue:setMode", ({ newMode }) => {
    if (newMode === "POLLING") setImmediate(history.flushFinished);
  });
  // The queue ran dry: the last runs' history goes out now rather than after the flush delay.
  events.on("localQueue:getJobs:complete", ({ jobs }) => {
    if (jobs.length === 0) history.flushSoon();
  });
  events.on("worker:getJob:empty", () => history.flushSoon());

  let runner: Runner;
  try {
    runner = await run({
      pgPool: pool,
      events,
      taskList,
      parsedCronItems,
      concurrency: w.concurrency,
      pollInterval: w.pollIntervalMs,
      noHandleSignals: true,
      logger: workerLogger(log),
      preset: {
        worker: {
          localQueue: w.localQueueSize > 1 ? { size: w.localQueueSize } : undefined,
          completeJobBatchDelay: w.localQueueSize > 1 ? 0 : -1,
          failJobBatchDelay: w.localQueueSize > 1 ? 0 : -1,
        },
      },
    });
  } catch (err) {
    closeServices();
    await Promise.all([pool.end(), historyPool.end(), heartbeatPool.end()]);
    throw err;
  }

  let running = true;
  let stopAsked = false;
  let died!: () => void;
  const diedPromise = new Promise<void>((resolve) => (died = resolve));
  // graphile-worker 0.18's runner.promise resolves, not rejects, when its worker pool dies of an
  // error (it logs "Runner stopping (reason: worker pool exited with error ...)" at warn level).
  const stoppedByItself = (err?: unknown) => {
    running = false;
    if (stopAsked) return;
    log.error("the worker stopped by itself and runs no more jobs; its heartbeat stops so that its jobs are recovered", {
      err: err ?? "graphile-worker's runner ended (see its warning above)",
    });
    heartbeat.silence();
    died();
  };
  const finished = runner.promise.then(() => stoppedByItself(), (err: unknown) => stoppedByItself(err));

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      shuttingDown = true;
      stopAsked = true;
      log.info("worker stopping: finishing running jobs", { running: history.runningCount });
      // At the time limit the runner is killed, and the stop goes on without waiting for jobs that
      // ignore their abort signal (graphile-worker's stop would wait for them for ever): they are
      // recorded abandoned, the heartbeat stays, and a live worker's crash recovery runs them again.
      let killed!: () => void;
      const killedPromise = new Promise<void>((resolve) => (killed = resolve));
      const timeout = setTimeout(() => {
        log.warn("worker did not stop in time; abandoning running jobs", { running: history.runningCount });
        forced = true;
        void runner.kill().catch(() => {}).finally(killed);
      }, w.shutdownTimeoutMs);
      wake?.stop();
      try {
        // A runner that already stopped by itself refuses stop(); its cleanup below still runs.
        await Promise.race([
          (async () => {
            if (running) await runner.stop();
            await finished;
          })(),
          killedPromise,
        ]);
      } catch (err) {
        log.error("worker did not stop cleanly", { err });
      } finally {
        clearTimeout(timeout);
        const clean = !forced && history.runningCount === 0;
        // graphile-worker's hand-back of its local queue may still be under way (it does not wait
        // for it, see app_private.forget_worker): let it land before looking at what stays locked.
        if (clean) await untilIdle(pool, 2000);
        // History first: a run whose end cannot be written stays `running` in job_runs, and only
        // crash recovery, which needs this heartbeat, would then mark it abandoned.
        const written = await history.close();
        await heartbeat.stop(
          clean && written ? null : written ? "stopped with jobs still running" : "stopped with job history unwritten",
          [...handingBack],
        );
        closeServices();
        await Promise.all([pool.end(), historyPool.end(), heartbeatPool.end()]);
      }
      log.info("worker stopped");
    })());

  // The runner already runs and may hold fetched jobs: a start that fails from here on (its pool
  // cannot open its connections: the server is full, or failing over) stops it as a shutdown
  // would, so that its jobs are handed back, not left locked under a pool nobody recovers.
  // All settled before the stop: a heartbeat still on its first beat would otherwise write its row
  // again after the stop removed it.
  const started = await Promise.allSettled([wake?.start(), warmPool(pool, w.concurrency), heartbeat.start()]);
  const failed = started.find((r) => r.status === "rejected");
  if (failed) {
    log.error("the worker could not finish starting; stopping it", { err: failed.reason });
    await stop();
    throw failed.reason;
  }
  log.info("worker started", {
    workerId,
    tasks: selected.map((t) => t.identifier).join(","),
    cron: parsedCronItems.length,
    concurrency: w.concurrency,
    localQueue: w.localQueueSize,
    exactWake: w.exactWake,
  });

  return { workerId, runner, pool, history, wake, heartbeat, isRunning: () => running, died: diedPromise, stop };
}
