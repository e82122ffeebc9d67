// Completes a matched exchange at its exchange_date (key exchanges:<id>:complete); the daily
// exchanges__complete_due sweep catches any whose job was lost.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { completeExchange } from "../src/exchanges/jobs.ts";

export default defineTask({
  description: "Marks a MATCHED exchange COMPLETED once its date has passed.",
  payload: z.object({ id: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 30_000,
  run: ({ id }, { query, job }) => completeExchange(query, job, id),
});
