// Expires one offer at its exact expires_at. Scheduled (key offers:<id>:expire) by the offers
// triggers whenever an offer becomes SENT or its expires_at moves; removed when it leaves SENT.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { expireOffer } from "../src/offers/expire.ts";

export default defineTask({
  description: "Marks a SENT offer EXPIRED once its expires_at has passed; the worker is then told.",
  payload: z.object({ id: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 30_000,
  run: ({ id }, { query, job }) => expireOffer(query, job, id),
});
