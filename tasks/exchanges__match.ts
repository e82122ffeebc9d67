// Draws a gift exchange's assignment once it enters MATCHING (enqueued by the exchanges
// triggers): MATCHED with one assignment email per participant, or back to REGISTRATION_CLOSED
// with a notification to the organiser when no assignment satisfies the exclusions.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { matchExchange } from "../src/exchanges/jobs.ts";

export default defineTask({
  description: "Draws a uniformly random gift assignment for an exchange in MATCHING (no self-gifts, exclusions honoured).",
  payload: z.object({ id: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 60_000,
  run: ({ id }, { query }) => matchExchange(query, id),
});
