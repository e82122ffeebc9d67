// Crontab sweep (see crontab): Deletes rate-limit windows that have ended, in batches.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes rate-limit windows that have ended, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_rate_limits", { batchSize, signal, log, what: "rate-limit windows" }),
});
