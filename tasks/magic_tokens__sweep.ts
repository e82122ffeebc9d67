// Crontab sweep (see crontab): Deletes login tokens that expired, or were used more than 24 hours ago, in batches.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes login tokens that expired, or were used more than 24 hours ago, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_magic_tokens", { batchSize, signal, log, what: "login tokens" }),
});
