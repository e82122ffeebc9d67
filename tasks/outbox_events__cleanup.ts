// Crontab sweep (see crontab), every 6 hours at :30: deletes outbox events older than
// OUTBOX_RETENTION_HOURS whose deliveries have all ended, with their deliveries and attempts.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes outbox events past retention whose deliveries have ended, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  run: ({ batchSize }, { query, signal, log, config }) =>
    sweep(query, "app_private.sweep_outbox_events", {
      batchSize,
      signal,
      log,
      what: "outbox events",
      args: [`${config.webhooks.outboxRetentionHours} hours`],
    }),
});
