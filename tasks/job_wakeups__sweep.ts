// Crontab sweep (see crontab): deletes wake-up marks more than a minute in the past
// (app_private.job_wakeups, read by src/worker/wake.ts).
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes past wake-up marks of scheduled jobs, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_job_wakeups", { batchSize, signal, log, what: "past wake-ups" }),
});
