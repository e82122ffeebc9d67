// Crontab sweep (see crontab), daily at 00:00 UTC as in the source system: completes MATCHED
// exchanges whose date has passed and whose exchanges__complete job was lost.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Completes MATCHED exchanges whose date has passed, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_due_exchanges", { batchSize, signal, log, what: "due exchanges", count: "completed" }),
});
