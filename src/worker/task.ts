// How a task file declares itself: `export default defineTask({...})`. The definition carries the
// payload schema and the task's defaults (priority, max attempts, time limit) — declared once here
// and honoured on every enqueue path: SQL (app_private.add_jobs reads the synced catalogue), the
// crontab (defaults filled into each entry) and TypeScript (enqueue goes through the same SQL).
import type { Job, JobHelpers } from "graphile-worker";
import type { z } from "zod";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import type { Services } from "./services.ts";

/** graphile-worker runs smaller numbers first. */
export const PRIORITY = { userFacing: 0, maintenance: 10 } as const;

export const TASK_DEFAULTS = { priority: PRIORITY.userFacing, maxAttempts: 25, timeLimitMs: 60_000 } as const;

/** Without a declared soft limit, the abort signal fires at this share of the hard limit (240 s of 300 s). */
export const SOFT_LIMIT_SHARE = 0.8;

export interface EnqueueOptions {
  runAt?: Date;
  jobKey?: string;
  queueName?: string;
  priority?: number;
  maxAttempts?: number;
}

export interface TaskContext {
  job: Job;
  /**
   * Aborted at the task's soft time limit (wind down: the reason is a TaskSoftTimeoutError), at
   * its hard limit, or when the worker shuts down. Pass it to I/O.
   */
  signal: AbortSignal;
  log: Logger;
  config: Config;
  /** For crontab jobs, the tick this job is for (a backfilled tick is in the past). */
  cron: { ts: Date; backfilled: boolean } | null;
  /** Email and other outbound edges, built when the worker started. */
  services: Services;
  query: JobHelpers["query"];
  withPgClient: JobHelpers["withPgClient"];
  /** Enqueue a follow-up job with that task's declared defaults. */
  enqueue(identifier: string, payload: Record<string, unknown>, options?: EnqueueOptions): Promise<string>;
}

/**
 * Throw this when retrying cannot help (bad data, a refused address, a template that cannot
 * render): the run is recorded as failed_permanently and the job is not retried.
 */
export class PermanentFailure extends Error {
  override name = "PermanentFailure";
}

const SKIPPED = Symbol("skipped");
export interface Skipped {
  [SKIPPED]: true;
  reason: string;
}
/** Return this when the job no longer applies: recorded as outcome `skipped` with the reason. */
export function skipped(reason: string): Skipped {
  return { [SKIPPED]: true, reason };
}
export function isSkipped(value: unknown): value is Skipped {
  return typeof value === "object" && value !== null && SKIPPED in value;
}

/**
 * For a job that runs before the time its record sets (an admin's retryJob or rescheduleJob on a
 * job that was only scheduled): puts it back, with its own key and payload, at the record's time,
 * and returns the skip that records it. `due` selects that time only while the job still applies
 * and is not yet due, locking the record's row (FOR SHARE), in the statement that puts the job
 * back: a change to the record either came first and is seen, or waits, and then its trigger's new
 * time wins. A job without a key (added by hand) is not put back; the sweeps remain its safety net.
 */
export async function notYetDue(
  query: JobHelpers["query"],
  job: Job,
  due: { sql: string; params: unknown[] },
  what: string,
  /** The skip's reason when `due` selects nothing (the job no longer applies). */
  otherwise = `${what} changed as it was read: not put back`,
): Promise<Skipped> {
  if (job.key === null) return skipped(`${what} is not due yet`);
  const n = due.params.length;
  const { rows } = await query<{ due: Date }>(
    `select d.due, app_private.schedule_jobs($${n + 1}, array[$${n + 2}::json], array[d.due], array[$${n + 3}::text]) from (${due.sql}) d (due)`,
    [...due.params, job.task_identifier, JSON.stringify(job.payload), job.key],
  );
  if (!rows[0]) return skipped(otherwise);
  return skipped(`${what} is not due until ${rows[0].due.toISOString()}: put back until then`);
}

/** What a task may return: recorded in job_runs.result. */
export type TaskResult = Record<string, unknown> | Skipped | void;

export interface TaskDefinition<S extends z.ZodType = z.ZodType> {
  description: string;
  payload: S;
  priority?: number;
  maxAttempts?: number;
  /** Hard limit: the attempt fails as timed_out (and is retried). */
  timeLimitMs?: number;
  /** Soft limit: the abort signal fires, so the task can stop cleanly. Below timeLimitMs. */
  softTimeLimitMs?: number;
  run(payload: z.output<S>, ctx: TaskContext): Promise<TaskResult>;
}

export interface ResolvedTask {
  identifier: string;
  description: string;
  payload: z.ZodType;
  priority: number;
  maxAttempts: number;
  timeLimitMs: number;
  softTimeLimitMs: number;
  run(payload: unknown, ctx: TaskContext): Promise<TaskResult>;
}

const DEFINITION = Symbol.for("hourglass.task");

export function defineTask<S extends z.ZodType>(definition: TaskDefinition<S>): TaskDefinition<S> {
  return Object.assign(definition, { [DEFINITION]: true });
}

export function isTaskDefinition(value: unknown): value is TaskDefinition {
  return typeof value === "object" && value !== null && DEFINITION in value;
}

export function resolveTask(identifier: string, def: TaskDefinition): ResolvedTask {
  const timeLimitMs = def.timeLimitMs ?? TASK_DEFAULTS.timeLimitMs;
  const softTimeLimitMs = def.softTimeLimitMs ?? Math.floor(timeLimitMs * SOFT_LIMIT_SHARE);
  if (!(Number.isInteger(timeLimitMs) && timeLimitMs > 0) || !(Number.isInteger(softTimeLimitMs) && softTimeLimitMs > 0)) {
    throw new Error(`Task ${identifier}: time limits must be positive whole milliseconds`);
  }
  if (softTimeLimitMs >= timeLimitMs) {
    throw new Error(`Task ${identifier}: softTimeLimitMs (${softTimeLimitMs}) must be below timeLimitMs (${timeLimitMs})`);
  }
  return {
    identifier,
    description: def.description,
    payload: def.payload,
    priority: def.priority ?? TASK_DEFAULTS.priority,
    maxAttempts: def.maxAttempts ?? TASK_DEFAULTS.maxAttempts,
    timeLimitMs,
    softTimeLimitMs,
    run: def.run as ResolvedTask["run"],
  };
}
