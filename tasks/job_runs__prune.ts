// Retention for the job history: deletes runs older than JOB_HISTORY_RETENTION_DAYS in bounded
// batches (each its own short transaction, walking the started_at index), and stops after a time
// budget so one sweep never holds the worker for long; the next tick continues.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";

const BATCH_SIZE = 5000;
const BUDGET_MS = 30_000;

export default defineTask({
  description: "Deletes job history rows older than the retention period, in batches.",
  payload: z.object({ batchSize: z.number().int().min(1).max(100_000).optional() }),
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 60_000,
  async run(payload, { query, config, signal, log }) {
    const batchSize = payload.batchSize ?? BATCH_SIZE;
    const { rows: [cutoffRow] } = await query<{ cutoff: Date }>(
      "select now() - make_interval(days => $1) as cutoff",
      [config.history.retentionDays],
    );
    const cutoff = cutoffRow!.cutoff;
    const deadline = Date.now() + BUDGET_MS;
    let deleted = 0;
    for (;;) {
      const { rows } = await query<{ n: number }>("select app_private.prune_job_runs($1, $2) as n", [cutoff, batchSize]);
      const n = rows[0]!.n;
      deleted += n;
      if (n < batchSize || Date.now() > deadline || signal.aborted) break;
    }
    const { rows: [left] } = await query<{ remaining: number }>(
      "select count(*)::integer as remaining from app_public.job_runs where started_at < $1",
      [cutoff],
    );
    const remaining = left!.remaining;
    log.info("pruned job history", { deleted, remaining, retentionDays: config.history.retentionDays });
    return { deleted, remaining };
  },
});
