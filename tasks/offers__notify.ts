// Tells one person about one offer event (sent, renewed, expired, accepted, rejected): an in-app
// notification and/or an email, per their preferences. Enqueued by the offers triggers, one job
// per recipient, so one failure never holds up another.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { notifyOffer, offerNotifyPayload } from "../src/offers/notify.ts";

export default defineTask({
  description: "Notifies one user of one offer event, in the app and/or by email per their preferences.",
  payload: offerNotifyPayload,
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 30_000,
  run: (payload, { query }) => notifyOffer(query, payload),
});
