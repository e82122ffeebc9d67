// Expiring one offer: the job scheduled for its expires_at re-reads it and acts only if the offer
// is still SENT and due. The UPDATE fires the offers triggers, which enqueue the worker's
// "expired" notification in the same transaction.
import type { Job, JobHelpers } from "graphile-worker";
import { notYetDue, skipped, type Skipped } from "../worker/task.ts";

export async function expireOffer(query: JobHelpers["query"], job: Job, id: number): Promise<{ expiredAt: string } | Skipped> {
  const { rows } = await query<{ expired_at: Date }>(
    `update app_public.offers set status = 'EXPIRED'
     where id = $1 and status = 'SENT' and expires_at <= now()
     returning expired_at`,
    [id],
  );
  if (rows[0]) return { expiredAt: rows[0].expired_at.toISOString() };
  const { rows: now } = await query<{ status: string; expires_at: Date | null }>(
    "select status, expires_at from app_public.offers where id = $1",
    [id],
  );
  if (!now[0]) return skipped(`offer ${id} no longer exists`);
  if (now[0].status !== "SENT") return skipped(`offer ${id} is ${now[0].status}`);
  if (now[0].expires_at === null) return skipped(`offer ${id} has no expiry`);
  return notYetDue(
    query,
    job,
    { sql: "select expires_at from app_public.offers where id = $1 and status = 'SENT' and expires_at > now() for share", params: [id] },
    `offer ${id}`,
  );
}
