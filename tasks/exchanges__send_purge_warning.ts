// Warns an exchange's organiser, once, 23 days after completion that its data will be purged 7
// days later (key exchanges:<id>:purge_warning).
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sendPurgeWarning } from "../src/exchanges/jobs.ts";

export default defineTask({
  description: "Tells the organiser, once, that a completed exchange will be purged in 7 days.",
  payload: z.object({ id: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 30_000,
  run: ({ id }, { query, job }) => sendPurgeWarning(query, job, id),
});
