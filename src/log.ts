// Structured logging: one line per event, with context fields (task, job, attempt, ...).
// JSON lines in production for log shippers; "time level msg key=value" while developing.
import { Logger as WorkerLogger, type LogFunctionFactory } from "graphile-worker";
import type { LogLevel } from "./config.ts";

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
  isLevelEnabled(level: LogLevel): boolean;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  level: LogLevel;
  format: "pretty" | "json";
  write?: (line: string) => void;
}

function errorFields(value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { message: value.message, name: value.name, ...(code ? { code } : {}), stack: value.stack };
  }
  return value;
}

function prettyValue(value: unknown): string {
  if (typeof value === "string") return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  if (value instanceof Error) return JSON.stringify(value.message);
  return JSON.stringify(value);
}

export function createLogger(options: LoggerOptions, base: Fields = {}): Logger {
  const min = RANK[options.level];
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  const emit = (level: LogLevel, msg: string, fields?: Fields) => {
    if (RANK[level] < min) return;
    const all: Fields = { ...base, ...fields };
    if (options.format === "json") {
      const record: Fields = { time: new Date().toISOString(), level, msg };
      for (const [k, v] of Object.entries(all)) record[k] = errorFields(v);
      write(JSON.stringify(record));
    } else {
      let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}`;
      for (const [k, v] of Object.entries(all)) {
        if (v !== undefined) line += ` ${k}=${prettyValue(v)}`;
      }
      const err = Object.values(all).find((v): v is Error => v instanceof Error);
      if (err?.stack && RANK[level] >= RANK.error) line += `\n${err.stack}`;
      write(line);
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(options, { ...base, ...fields }),
    isLevelEnabled: (level) => RANK[level] >= min,
  };
}

/**
 * graphile-worker puts whole job rows (payload included) in its log metadata. Their payloads can
 * hold what a task needs and nobody else should read: log lines carry job ids instead (job, a
 * batch's jobs, a failed batch's specs).
 */
function withoutPayloads(meta: Fields): Fields {
  if (!("job" in meta) && !("payload" in meta) && !("jobs" in meta) && !("specs" in meta)) return meta;
  const { job, payload: _payload, jobs, specs, ...rest } = meta;
  const idOf = (j: unknown) => (j as { id?: unknown } | null | undefined)?.id;
  const out: Fields = { ...rest };
  if (idOf(job) !== undefined) out.job = idOf(job);
  // A failed batch of completions (jobs) or failures (specs: {job, message}): their ids only.
  if (Array.isArray(jobs)) out.jobs = jobs.map(idOf);
  if (Array.isArray(specs)) out.jobs = specs.map((spec) => idOf((spec as { job?: unknown } | null)?.job));
  return out;
}

/**
 * graphile-worker 0.18's local queue, released while jobs wait in it, throws "Cannot background
 * something when the queue is already released" from its hand-back and fails the graceful
 * shutdown with it (the jobs finished meanwhile are completed as usual).
 */
function isLocalQueueReleaseBug(err: unknown): boolean {
  const seen = new Set<unknown>();
  const errors = (e: unknown): unknown[] => {
    if (!(e instanceof Error) || seen.has(e)) return [];
    seen.add(e);
    const inner = e instanceof AggregateError ? e.errors.flatMap(errors) : [];
    return inner.length ? inner : [e];
  };
  const leaves = errors(err);
  return leaves.length > 0 && leaves.every((e) => e instanceof Error && e.message.includes("Cannot background something when the queue is already released"));
}

/** Graphile libraries' log lines (worker, migrate), routed through ours with their scope as fields. */
export function graphileLogFactory(log: Logger): LogFunctionFactory {
  return (scope) => {
    // graphile-worker scopes a logger for every job; build ours only when it is first used.
    let scoped: Logger | undefined;
    return (level, message, meta) => {
      scoped ??= log.child({
        component: "graphile-worker",
        ...(scope.taskIdentifier ? { task: scope.taskIdentifier } : {}),
        ...(scope.jobId ? { job: scope.jobId } : {}),
      });
      // Per-job "Completed task" lines would be one log line per job at thousands of jobs per
      // second; the job history records every run, so they are debug here.
      const perJobSuccess = level === "info" && (meta as { success?: unknown } | undefined)?.success === true;
      // The local queue's shutdown bug is handled (the runner hands the jobs back itself) but
      // graphile-worker reports it as five errors: warnings here, errors only when something else failed too.
      const knownBug = level === "error" && isLocalQueueReleaseBug((meta as { error?: unknown } | undefined)?.error);
      const l: LogLevel =
        level === "error" && !knownBug ? "error" : level === "warning" || knownBug ? "warn" : level === "info" && !perJobSuccess ? "info" : "debug";
      if (!log.isLevelEnabled(l)) return;
      scoped[l](message, meta ? withoutPayloads(meta as Fields) : undefined);
    };
  };
}

export function workerLogger(log: Logger): WorkerLogger {
  return new WorkerLogger(graphileLogFactory(log));
}
