// Deletes an exchange 30 days after completion with its participants, exclusions and matches,
// and logs it (key exchanges:<id>:purge). Eligibility is re-checked at delete time.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { purgeExchange } from "../src/exchanges/jobs.ts";

export default defineTask({
  description: "Deletes a completed exchange's data 30 days after completion, if it is still eligible, and logs it.",
  payload: z.object({ id: z.number().int().positive() }),
  priority: PRIORITY.maintenance,
  maxAttempts: 10,
  timeLimitMs: 60_000,
  run: ({ id }, { query, job }) => purgeExchange(query, job, id),
});
