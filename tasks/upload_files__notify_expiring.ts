// Crontab sweep (see crontab), hourly: emits one file.expiring webhook event per upload that
// expires within FILE_EXPIRING_WINDOW_HOURS and was not notified yet (once per file).
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Emits file.expiring for uploads about to expire, once per file.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log, config }) =>
    sweep(query, "app_private.sweep_expiring_uploads", {
      batchSize,
      signal,
      log,
      what: "expiring uploads",
      count: "notified",
      args: [`${config.uploads.expiringWindowHours} hours`],
    }),
});
