// Reads the `crontab` file and fills each entry's priority and max attempts from its task's
// declared defaults (graphile-worker would otherwise use its own: priority 0, 25 attempts).
// An entry for a task that does not exist fails start-up instead of enqueuing jobs nobody runs.
// Each entry's jobs get the key cron:<id>, which tells the task wrapper which schedule a job
// belongs to (so a paused schedule's tick is skipped), and coalesces a tick that is still queued
// with the next one.
import fs from "node:fs/promises";
import path from "node:path";
import { parseCrontab, type ParsedCronItem } from "graphile-worker";
import type { ResolvedTask } from "./task.ts";

export const CRONTAB_FILE = path.resolve(import.meta.dirname, "../../crontab");

export async function loadCrontab(tasks: readonly ResolvedTask[], file = CRONTAB_FILE): Promise<ParsedCronItem[]> {
  const text = await fs.readFile(file, "utf8");
  let items: ParsedCronItem[];
  try {
    items = parseCrontab(text);
  } catch (err) {
    throw new Error(`${path.basename(file)}: ${(err as Error).message}`, { cause: err });
  }
  const byId = new Map(tasks.map((t) => [t.identifier, t]));
  return items.map((item) => {
    const task = byId.get(item.task);
    if (!task) throw new Error(`${path.basename(file)}: entry ${item.identifier} runs unknown task ${item.task}`);
    return {
      ...item,
      options: {
        ...item.options,
        priority: item.options.priority ?? task.priority,
        maxAttempts: item.options.maxAttempts ?? task.maxAttempts,
        jobKey: item.options.jobKey ?? cronJobKey(item.identifier),
      },
    };
  });
}

const CRON_KEY_PREFIX = "cron:";
export const cronJobKey = (id: string) => `${CRON_KEY_PREFIX}${id}`;
/** The crontab entry a job key belongs to (cron:<id>), or null for any other key. */
export const scheduleIdOfJobKey = (key: string | null | undefined): string | null =>
  key?.startsWith(CRON_KEY_PREFIX) ? key.slice(CRON_KEY_PREFIX.length) : null;

export interface ScheduleEntry {
  id: string;
  pattern: string;
  task: string;
  options: Record<string, unknown>;
  payload: Record<string, unknown> | null;
}

/** The entries of the crontab as app_public.schedules records them (no task validation: migrations run this). */
export async function readSchedules(file = CRONTAB_FILE): Promise<ScheduleEntry[]> {
  const text = await fs.readFile(file, "utf8");
  const items = parseCrontab(text);
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  return items.map((item, i) => ({
    id: item.identifier,
    pattern: (lines[i] ?? "").split(/\s+/).slice(0, 5).join(" "),
    task: item.task,
    options: Object.fromEntries(Object.entries(item.options).filter(([, v]) => v !== undefined)),
    payload: item.payload,
  }));
}
