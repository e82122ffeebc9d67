// Daily digest (crontab, 08:00 UTC): queues one email per user with unread notifications from the
// last 24 hours that their email preferences allow. The email log's key carries the UTC date, so
// a second run on the same day (a retry, a backfilled tick) queues nothing more.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";

export default defineTask({
  description: "Queues the daily digest email of unread notifications, at most one per user per day.",
  payload: z.object({ asOf: z.iso.datetime({ offset: true }).optional() }),
  priority: PRIORITY.maintenance,
  maxAttempts: 5,
  timeLimitMs: 120_000,
  async run({ asOf }, { query, cron, log }) {
    // The crontab tick (not the moment the job happens to run) decides which day this digest is for.
    const at = asOf ? new Date(asOf) : (cron?.ts ?? new Date());
    const { rows } = await query<{ queued: number }>("select app_private.queue_notification_digests($1) as queued", [at]);
    log.info("queued notification digests", { queued: rows[0]!.queued, asOf: at.toISOString() });
    return { queued: rows[0]!.queued, asOf: at.toISOString() };
  },
});
