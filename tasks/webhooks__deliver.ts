// One attempt at delivering one outbox event to one endpoint (signed, SSRF-guarded, bounded in
// time and size). Enqueued with the event in the same transaction, then re-enqueued by
// app_private.record_webhook_attempt on the retry schedule. A failed HTTP attempt is a
// successful job: the retry is the delivery's own next job, at its own time.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { deliverWebhook } from "../src/webhooks/jobs.ts";

export default defineTask({
  description: "Makes one signed delivery attempt of a webhook event and records it; schedules the next attempt when it fails.",
  payload: z.object({ deliveryId: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 60_000,
  run: ({ deliveryId }, { query, services }) => deliverWebhook(query, services.webhooks, deliveryId),
});
