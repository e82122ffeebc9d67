// Crontab sweep (see crontab): Deletes expired sessions in batches.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes expired sessions in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_sessions", { batchSize, signal, log, what: "sessions" }),
});
