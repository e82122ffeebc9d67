// Crontab sweep (see crontab), every 5 minutes: re-enqueues pending webhook deliveries that have
// been due for over a minute without a job (20 at a time, as the source system did).
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Re-enqueues pending webhook deliveries that lost their job, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log }) =>
    sweep(query, "app_private.sweep_stranded_deliveries", { batchSize: batchSize ?? 20, signal, log, what: "stranded webhook deliveries", count: "requeued" }),
});
