// Loads every task in tasks/ (file name = task identifier) and keeps app_private.tasks in step
// with what the files declare. A file that fails to load stops start-up with its name: a worker
// that silently lacks a task would leave that task's jobs queued forever.
import fs from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type pg from "pg";
import { z } from "zod";
import { isTaskDefinition, resolveTask, type ResolvedTask } from "./task.ts";

export const TASKS_DIR = path.resolve(import.meta.dirname, "../../tasks");

const IDENTIFIER = /^[a-z][a-z0-9_]*$/;

export class TaskLoadError extends Error {
  override name = "TaskLoadError";
}

export async function loadTasks(dir = TASKS_DIR): Promise<ResolvedTask[]> {
  const files = (await fs.readdir(dir)).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts")).sort();
  const tasks: ResolvedTask[] = [];
  for (const file of files) {
    const identifier = path.basename(file, ".ts");
    const where = path.relative(process.cwd(), path.join(dir, file));
    if (!IDENTIFIER.test(identifier)) {
      throw new TaskLoadError(`Task file ${where}: the file name must be a task identifier (lower-case letters, digits, _)`);
    }
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(path.join(dir, file)).href)) as { default?: unknown };
    } catch (err) {
      throw new TaskLoadError(`Task file ${where} failed to load: ${(err as Error).message}`, { cause: err });
    }
    if (!isTaskDefinition(mod.default)) {
      throw new TaskLoadError(`Task file ${where} must \`export default defineTask({...})\``);
    }
    tasks.push(resolveTask(identifier, mod.default));
  }
  return tasks;
}

/**
 * Upserts the catalogue. Rows for tasks this version does not have are kept (with their older
 * synced_at): during a rolling deploy an old process restarting must not remove the new version's
 * tasks, or every trigger enqueuing them would fail. Runs under the migration lock.
 */
export async function syncCatalogue(client: pg.ClientBase | pg.Pool, tasks: readonly ResolvedTask[]): Promise<void> {
  await client.query(
    `insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms, soft_time_limit_ms, payload_schema, synced_at)
     select identifier, description, priority, max_attempts, time_limit_ms, soft_time_limit_ms, payload_schema, now()
     from unnest($1::text[], $2::text[], $3::smallint[], $4::smallint[], $5::integer[], $6::integer[], $7::jsonb[])
       as t(identifier, description, priority, max_attempts, time_limit_ms, soft_time_limit_ms, payload_schema)
     on conflict (identifier) do update set
       description = excluded.description, priority = excluded.priority, max_attempts = excluded.max_attempts,
       time_limit_ms = excluded.time_limit_ms, soft_time_limit_ms = excluded.soft_time_limit_ms,
       payload_schema = excluded.payload_schema, synced_at = now()`,
    [
      tasks.map((t) => t.identifier),
      tasks.map((t) => t.description),
      tasks.map((t) => t.priority),
      tasks.map((t) => t.maxAttempts),
      tasks.map((t) => t.timeLimitMs),
      tasks.map((t) => t.softTimeLimitMs),
      tasks.map((t) => payloadSchema(t)),
    ],
  );
}

/**
 * The payload schema as JSON Schema (what a client may send), for the catalogue. A schema zod
 * cannot express in JSON Schema (a custom refinement, say) is recorded as null rather than
 * failing start-up: the worker still validates every payload with zod itself.
 */
export function payloadSchema(task: ResolvedTask): string | null {
  try {
    return JSON.stringify(z.toJSONSchema(task.payload, { io: "input", unrepresentable: "any" }));
  } catch {
    return null;
  }
}
