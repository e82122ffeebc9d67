// What the webhooks__deliver task does: read what to send (app_private.webhook_delivery_request),
// make one attempt, and hand the outcome to app_private.record_webhook_attempt, which records it
// and, for a retry, enqueues the next attempt at its time under the same job key.
import type { JobHelpers } from "graphile-worker";
import { skipped } from "../worker/task.ts";
import type { Deliverer } from "./deliver.ts";

interface Request {
  status: string;
  attempts: number;
  url: string;
  message_id: string;
  body: string;
  secrets: string[];
  endpoint_active: boolean;
}

export async function deliverWebhook(query: JobHelpers["query"], deliverer: Deliverer, deliveryId: number) {
  const { rows } = await query<Request>("select * from app_private.webhook_delivery_request($1)", [deliveryId]);
  const r = rows[0];
  if (!r) return skipped(`delivery ${deliveryId} no longer exists`);
  if (r.status !== "pending") return skipped(`delivery ${deliveryId} is ${r.status}`);
  if (!r.endpoint_active) {
    await query(
      "update app_public.webhook_deliveries set status = 'failed', next_attempt_at = null, last_error = 'endpoint disabled' where id = $1 and status = 'pending'",
      [deliveryId],
    );
    return skipped(`delivery ${deliveryId}: endpoint disabled`);
  }
  const attempt = r.attempts + 1;
  const o = await deliverer.deliver({ url: r.url, messageId: r.message_id, body: r.body, secrets: r.secrets });
  const { rows: recorded } = await query<{ outcome: string }>(
    "select app_private.record_webhook_attempt($1, $2, $3, $4, $5, $6) as outcome",
    [deliveryId, attempt, o.statusCode, o.error, o.durationMs, o.retryAfterSeconds],
  );
  // The job's result is the admins' (job_runs): the refused addresses go there, not to the owner's attempt row.
  return {
    outcome: recorded[0]!.outcome, attempt, statusCode: o.statusCode, error: o.error, ms: Math.round(o.durationMs),
    ...(o.blockedDetail ? { blocked: o.blockedDetail } : {}),
  };
}
