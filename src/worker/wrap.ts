// The task wrapper every task runs inside: validates the payload, records the run in the job
// history, applies the task's time limits, and logs with task/job/attempt context.
//
// Outcomes: return → succeeded (or skipped); throw → failed_retrying, or failed_permanently on
// the last attempt (graphile-worker retries with exponential backoff); soft time limit → the
// task's abort signal fires (it should stop cleanly; whatever it then returns or throws is
// recorded as usual); hard time limit → timed_out (retried like a failure). An invalid payload or a thrown PermanentFailure can never succeed, so
// it is recorded as failed_permanently and the job is completed, not retried (graphile-worker
// cannot fail a job it has locked; the history keeps the payload).
import type { JobHelpers, Task } from "graphile-worker";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { HistoryWriter } from "./history.ts";
import { errorText, redact } from "./redact.ts";
import { isSkipped, PermanentFailure, type EnqueueOptions, type ResolvedTask, type TaskContext, type TaskResult } from "./task.ts";
import type { Services } from "./services.ts";
import { uuidv7 } from "../db/uuidv7.ts";
import { scheduleIdOfJobKey } from "./crontab.ts";

export interface WrapRuntime {
  history: HistoryWriter;
  log: Logger;
  workerId: string;
  config: Config;
  services: Services;
}

export class TaskTimeoutError extends Error {
  override name = "TaskTimeoutError";
}

/** The abort reason at a task's soft time limit (a task that throws it has timed out too). */
export class TaskSoftTimeoutError extends TaskTimeoutError {
  override name = "TaskSoftTimeoutError";
}

/** The time limit behind an error: itself, or the cause of an AbortError (what signal-aware I/O throws). */
function timeoutBehind(err: unknown): TaskTimeoutError | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof TaskTimeoutError) return e;
  }
  return null;
}

const ENQUEUE_SQL = "select app_private.add_job($1, $2::json, $3, $4, $5, $6, $7)::text as id";

async function enqueue(
  helpers: JobHelpers,
  identifier: string,
  payload: Record<string, unknown>,
  o: EnqueueOptions = {},
): Promise<string> {
  const { rows } = await helpers.query<{ id: string }>(ENQUEUE_SQL, [
    identifier,
    JSON.stringify(payload),
    o.runAt ?? null,
    o.jobKey ?? null,
    o.queueName ?? null,
    o.priority ?? null,
    o.maxAttempts ?? null,
  ]);
  return rows[0]!.id;
}

/** The schedule, if an admin paused it (app_public.schedules). A failed check runs the job. */
async function pausedSchedule(helpers: JobHelpers, id: string, log: Logger): Promise<{ id: string; reason: string | null } | null> {
  try {
    const { rows } = await helpers.query<{ reason: string | null }>(
      "select pause_reason as reason from app_public.schedules where id = $1 and paused_at is not null",
      [id],
    );
    return rows[0] ? { id, reason: rows[0].reason } : null;
  } catch (err) {
    log.warn("could not check whether the schedule is paused; running the job", { schedule: id, err });
    return null;
  }
}

function cronOf(payload: unknown): TaskContext["cron"] {
  const cron = (payload as { _cron?: { ts?: unknown; backfilled?: unknown } } | null)?._cron;
  if (!cron || typeof cron.ts !== "string") return null;
  return { ts: new Date(cron.ts), backfilled: cron.backfilled === true };
}

/** graphile-worker adds `_cron: {ts, backfilled}` to crontab jobs; schemas describe the rest. */
function withoutCronMarker(payload: unknown): unknown {
  if (payload === null || payload === undefined) return {};
  if (typeof payload !== "object" || Array.isArray(payload) || !("_cron" in payload)) return payload;
  const { _cron: _, ...rest } = payload as Record<string, unknown>;
  return rest;
}


/**
 * What a running task sees (TaskContext). A class, so that the per-job cost is one object: the
 * abort controller, the combined signal and the child logger are built only if the task uses
 * them. After the soft time limit the signal is aborted (even if first asked for later); after
 * the hard limit the database helpers also refuse new work; a query already running is ended by the worker pool's
 * statement_timeout (see runner.ts).
 */
class JobContext implements TaskContext {
  readonly job: JobHelpers["job"];
  readonly config: Config;
  readonly services: Services;
  readonly cron: TaskContext["cron"];
  timedOut: TaskTimeoutError | undefined;
  private wound: TaskSoftTimeoutError | TaskTimeoutError | undefined;
  private readonly helpers: JobHelpers;
  private readonly taskLog: Logger;
  private limit: AbortController | undefined;
  private _signal: AbortSignal | undefined;
  private _log: Logger | undefined;
  private _query: JobHelpers["query"] | undefined;
  private _withPgClient: JobHelpers["withPgClient"] | undefined;
  private _enqueue: TaskContext["enqueue"] | undefined;

  constructor(helpers: JobHelpers, taskLog: Logger, runtime: WrapRuntime, rawPayload: unknown) {
    this.cron = cronOf(rawPayload);
    this.helpers = helpers;
    this.job = helpers.job;
    this.taskLog = taskLog;
    this.config = runtime.config;
    this.services = runtime.services;
  }

  get signal(): AbortSignal {
    if (!this._signal) {
      this.limit ??= new AbortController();
      if (this.wound) this.limit.abort(this.wound);
      this._signal = AbortSignal.any([this.limit.signal, this.helpers.abortSignal]);
    }
    return this._signal;
  }

  get log(): Logger {
    return (this._log ??= this.taskLog.child({ job: this.job.id, attempt: this.job.attempts }));
  }

  // Getters handing out closures (made on first use): tasks destructure these from the context.
  get query(): JobHelpers["query"] {
    return (this._query ??= ((text: string, values?: unknown[]) =>
      this.timedOut ? Promise.reject(this.timedOut) : this.helpers.query(text, values)) as JobHelpers["query"]);
  }

  get withPgClient(): JobHelpers["withPgClient"] {
    return (this._withPgClient ??= ((callback: Parameters<JobHelpers["withPgClient"]>[0]) =>
      this.timedOut ? Promise.reject(this.timedOut) : this.helpers.withPgClient(callback)) as JobHelpers["withPgClient"]);
  }

  get enqueue(): TaskContext["enqueue"] {
    return (this._enqueue ??= (identifier, payload, options) =>
      this.timedOut ? Promise.reject(this.timedOut) : enqueue(this.helpers, identifier, payload, options));
  }

  /** Soft limit: ask the task to stop. */
  windDown(reason: TaskSoftTimeoutError): void {
    this.wound ??= reason;
    this.limit?.abort(reason);
  }

  /** Hard limit: the attempt is over. */
  expire(error: TaskTimeoutError): void {
    this.timedOut = error;
    this.wound ??= error;
    this.limit?.abort(error);
  }
}

export function wrapTask(task: ResolvedTask, runtime: WrapRuntime): Task {
  const { history, workerId } = runtime;
  const taskLog = runtime.log.child({ task: task.identifier });
  const timeoutMessage = `Task ${task.identifier} exceeded its time limit of ${task.timeLimitMs} ms`;
  const softMessage = `Task ${task.identifier} reached its soft time limit of ${task.softTimeLimitMs} ms`;
  return async (rawPayload, helpers) => {
    const job = helpers.job;
    const id = uuidv7();
    const queueName = job.job_queue_id === null ? null : await helpers.getQueueName();
    const started = performance.now();
    history.start({
      id,
      jobId: job.id,
      task: task.identifier,
      queueName,
      jobKey: job.key ?? null,
      attempt: job.attempts,
      maxAttempts: job.max_attempts,
      payload: rawPayload === undefined ? null : redact(rawPayload),
      workerId,
      runAt: job.run_at ? job.run_at.getTime() : null,
      startedAt: Date.now(),
      durationMs: null,
      outcome: "running",
      error: null,
      result: null,
      clock: started,
    });
    const ctx = new JobContext(helpers, taskLog, runtime, rawPayload);

    const parsed = task.payload.safeParse(withoutCronMarker(rawPayload));
    if (!parsed.success) {
      const error = `Invalid payload: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`;
      ctx.log.error("job rejected: invalid payload; it will not be retried", { error });
      history.finish(id, "failed_permanently", error, null);
      return;
    }

    // A crontab job of a paused schedule: recorded as skipped, not run.
    const scheduleId = ctx.cron ? scheduleIdOfJobKey(job.key) : null;
    const paused = scheduleId ? await pausedSchedule(helpers, scheduleId, ctx.log) : null;
    if (paused) {
      ctx.log.info("job skipped: its schedule is paused", { schedule: paused.id });
      history.finish(id, "skipped", null, { skipped: `schedule ${paused.id} is paused${paused.reason ? `: ${paused.reason}` : ""}` });
      return;
    }

    // One timer at a time (a timer costs more than anything else here per job): the soft limit's,
    // which arms the hard limit's for the time left.
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await new Promise<TaskResult>((resolve, reject) => {
        const expire = () => {
          const err = new TaskTimeoutError(timeoutMessage);
          ctx.expire(err);
          reject(err);
        };
        const armed = performance.now();
        timer = setTimeout(() => {
          ctx.log.warn("job reached its soft time limit; its abort signal fired", { softTimeLimitMs: task.softTimeLimitMs });
          ctx.windDown(new TaskSoftTimeoutError(softMessage));
          timer = setTimeout(expire, Math.max(0, task.timeLimitMs - (performance.now() - armed)));
        }, task.softTimeLimitMs);
        task.run(parsed.data, ctx).then(resolve, reject);
      });
      if (isSkipped(result)) {
        ctx.log.info("job skipped", { reason: result.reason });
        history.finish(id, "skipped", null, { skipped: errorText(result.reason) });
      } else {
        if (taskLog.isLevelEnabled("debug")) ctx.log.debug("job succeeded", { ms: Math.round(performance.now() - started) });
        history.finish(id, "succeeded", null, result ? (redact(result) as Record<string, unknown>) : null);
      }
    } catch (err) {
      if (err instanceof PermanentFailure) {
        ctx.log.error("job failed permanently; it will not be retried", { error: errorText(err) });
        history.finish(id, "failed_permanently", errorText(err), null);
        return;
      }
      const last = job.attempts >= job.max_attempts;
      const timeout = timeoutBehind(err);
      const outcome = timeout ? "timed_out" : last ? "failed_permanently" : "failed_retrying";
      const error = errorText(timeout ?? err);
      ctx.log[last ? "error" : "warn"](last ? "job failed permanently" : "job failed; it will be retried", {
        outcome,
        error,
        ms: Math.round(performance.now() - started),
      });
      history.finish(id, outcome, error, null);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };
}
