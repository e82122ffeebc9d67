// The N-day reminder of a matched exchange, scheduled by the exchanges triggers at the exchange's
// local wall-clock time N days before it (key exchanges:<id>:reminder:<N>). Queues one email per
// participant who has not withdrawn and has reminders on; skipped when picked up more than an
// hour after its time.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sendReminders } from "../src/exchanges/jobs.ts";

export default defineTask({
  description: "Emails the N-day reminder of a gift exchange to its opted-in participants (skipped if more than an hour late).",
  payload: z.object({ id: z.number().int().positive(), days: z.number().int().min(1).max(60) }),
  priority: PRIORITY.userFacing,
  maxAttempts: 5,
  timeLimitMs: 60_000,
  run: ({ id, days }, { query, job }) => sendReminders(query, job, id, days),
});
