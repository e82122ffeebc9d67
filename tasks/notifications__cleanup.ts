// Crontab sweep (see crontab): deletes read notifications older than NOTIFICATION_RETENTION_DAYS.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes read notifications older than the retention period, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log, config }) =>
    sweep(query, "app_private.sweep_notifications", {
      batchSize,
      signal,
      log,
      what: "read notifications",
      args: [`${config.accounts.notificationRetentionDays} days`],
    }),
});
