// Crontab sweep (see crontab): deletes job history older than JOB_HISTORY_RETENTION_DAYS, in
// batches of 5,000, each its own short transaction.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes job history rows older than the retention period, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log, config }) =>
    sweep(query, "app_private.sweep_job_runs", {
      batchSize: batchSize ?? 5000,
      signal,
      log,
      what: "job history",
      args: [`${config.history.retentionDays} days`],
    }),
});
