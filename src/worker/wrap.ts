// The task wrapper every task runs inside: validates the payload, records the run in the job
// history, applies the task's time limit, and logs with task/job/attempt context.
//
// Outcomes: return → succeeded (or skipped); throw → failed_retrying, or failed_permanently on
// the last attempt (graphile-worker retries with exponential backoff); time limit → timed_out
// (retried like a failure). An invalid payload can never succeed, so it is recorded as
// failed_permanently and the job is not retried.
import type { JobHelpers, Task } from "graphile-worker";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { HistoryWriter } from "./history.ts";
import { redact } from "./redact.ts";
import { isSkipped, type EnqueueOptions, type ResolvedTask, type TaskContext } from "./task.ts";
import { uuidv7 } from "../db/uuidv7.ts";

export interface WrapRuntime {
  history: HistoryWriter;
  log: Logger;
  workerId: string;
  config: Config;
}

export class TaskTimeoutError extends Error {
  override name = "TaskTimeoutError";
}

const ENQUEUE_SQL = "select app_private.add_job($1, $2::json, $3, $4, $5, $6, $7)::text as id";

function enqueueWith(helpers: JobHelpers) {
  return async (identifier: string, payload: Record<string, unknown>, o: EnqueueOptions = {}): Promise<string> => {
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
  };
}

/** graphile-worker adds `_cron: {ts, backfilled}` to crontab jobs; schemas describe the rest. */
function withoutCronMarker(payload: unknown): unknown {
  if (payload === null || payload === undefined) return {};
  if (typeof payload !== "object" || Array.isArray(payload) || !("_cron" in payload)) return payload;
  const { _cron: _, ...rest } = payload as Record<string, unknown>;
  return rest;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function wrapTask(task: ResolvedTask, runtime: WrapRuntime): Task {
  const { history, workerId } = runtime;
  const taskLog = runtime.log.child({ task: task.identifier });
  return async (rawPayload, helpers) => {
    const job = helpers.job;
    const id = uuidv7();
    const log = taskLog.child({ job: job.id, attempt: job.attempts });
    const queueName = job.job_queue_id === null ? null : await helpers.getQueueName();
    history.start({
      id,
      jobId: job.id,
      task: task.identifier,
      queueName,
      jobKey: job.key ?? null,
      attempt: job.attempts,
      maxAttempts: job.max_attempts,
      payload: rawPayload === undefined ? null : JSON.stringify(redact(rawPayload)),
      workerId,
      runAt: job.run_at ? new Date(job.run_at) : null,
      startedAt: new Date(),
      finishedAt: null,
      outcome: "running",
      error: null,
      result: null,
    });

    const parsed = task.payload.safeParse(withoutCronMarker(rawPayload));
    if (!parsed.success) {
      const error = `Invalid payload: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`;
      log.error("job rejected: invalid payload; it will not be retried", { error });
      history.finish(id, "failed_permanently", error, null);
      return;
    }

    const limit = new AbortController();
    const signal = AbortSignal.any([limit.signal, helpers.abortSignal]);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new TaskTimeoutError(`Task ${task.identifier} exceeded its time limit of ${task.timeLimitMs} ms`);
        limit.abort(err);
        reject(err);
      }, task.timeLimitMs);
    });
    const ctx: TaskContext = {
      job,
      signal,
      log,
      config: runtime.config,
      query: helpers.query,
      withPgClient: helpers.withPgClient,
      enqueue: enqueueWith(helpers),
    };
    const started = performance.now();
    try {
      const result = await Promise.race([task.run(parsed.data, ctx), timeout]);
      if (isSkipped(result)) {
        log.info("job skipped", { reason: result.reason });
        history.finish(id, "skipped", null, JSON.stringify({ skipped: result.reason }));
      } else {
        log.debug("job succeeded", { ms: Math.round(performance.now() - started) });
        history.finish(id, "succeeded", null, result ? JSON.stringify(result) : null);
      }
    } catch (err) {
      const last = job.attempts >= job.max_attempts;
      const outcome = err instanceof TaskTimeoutError ? "timed_out" : last ? "failed_permanently" : "failed_retrying";
      log[last ? "error" : "warn"](last ? "job failed permanently" : "job failed; it will be retried", {
        outcome,
        error: message(err),
        ms: Math.round(performance.now() - started),
      });
      history.finish(id, outcome, message(err), null);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };
}
