// Fans one offer event out to its recipients: one offers__notify job each. Enqueued by the offers
// triggers per event and per 1000 offers, so a bulk UPDATE pays for a handful of jobs up front.
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { offerFanOutPayload, queueOfferNotifications } from "../src/offers/notify.ts";

export default defineTask({
  description: "Enqueues one offers__notify job per recipient of an offer event (up to 1000 offers per job).",
  payload: offerFanOutPayload,
  priority: PRIORITY.userFacing,
  maxAttempts: 10,
  timeLimitMs: 60_000,
  run: (payload, { query }) => queueOfferNotifications(query, payload),
});
