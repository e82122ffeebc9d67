// Reads the `crontab` file and fills each entry's priority and max attempts from its task's
// declared defaults (graphile-worker would otherwise use its own: priority 0, 25 attempts).
// An entry for a task that does not exist fails start-up instead of enqueuing jobs nobody runs.
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
      },
    };
  });
}
