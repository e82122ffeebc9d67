// Crontab sweep (see crontab): the safety net for offers__expire. Expires SENT offers past their
// expires_at whose job was lost (or that were written before the trigger existed), in batches.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Expires SENT offers past their expires_at that no job expired, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_overdue_offers", { batchSize, signal, log, what: "overdue offers", count: "expired" }),
});
