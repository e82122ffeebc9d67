// Renders and sends one email recorded in app_private.email_deliveries (see src/email/send.ts).
// Enqueued by app_private.queue_email in the same transaction as the row.
import { z } from "zod";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sendDelivery } from "../src/email/send.ts";

export default defineTask({
  description: "Sends one email from the email log, at most once.",
  payload: z.object({ deliveryId: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 60_000,
  async run({ deliveryId }, { query, services, log, job }) {
    return sendDelivery(deliveryId, job, { query, mailer: services.mailer, log });
  },
});
