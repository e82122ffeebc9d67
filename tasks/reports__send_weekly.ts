// Weekly report (crontab, Mondays 08:00 UTC): queues one email per admin summarising the week
// before — jobs by task and outcome, the slowest tasks, failures, offers, exchanges completed. The
// email log's key carries the ISO week, so a second run for the same week queues nothing more.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";

export default defineTask({
  description: "Queues the weekly report email to every admin, at most once per admin per week.",
  payload: z.object({ asOf: z.iso.datetime({ offset: true }).optional() }),
  priority: PRIORITY.maintenance,
  maxAttempts: 5,
  timeLimitMs: 120_000,
  async run({ asOf }, { query, cron, log }) {
    // The tick (not when the job happens to run) decides which week is reported.
    const at = asOf ? new Date(asOf) : (cron?.ts ?? new Date());
    const { rows } = await query<{ queued: number; week: string }>("select queued, week from app_private.queue_weekly_reports($1)", [at]);
    const { queued, week } = rows[0]!;
    log.info("queued weekly reports", { queued, week });
    return { queued, week };
  },
});
