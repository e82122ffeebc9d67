// Crontab sweep (see crontab), daily at 02:00 UTC as in the source system: sends purge warnings
// that are due and were not sent, then purges exchanges completed 30 or more days ago.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweep, sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Sends missed purge warnings, then purges exchanges completed 30 or more days ago, in batches.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 120_000,
  async run({ batchSize }, { query, signal, log }) {
    const warnings = await sweep(query, "app_private.sweep_purge_warnings", { batchSize, signal, log, what: "purge warnings", count: "warned" });
    const purges = await sweep(query, "app_private.sweep_exchange_purges", { batchSize, signal, log, what: "exchange purges", count: "purged" });
    return { warned: warnings.warned, purged: purges.purged, remaining: warnings.remaining + purges.remaining };
  },
});
