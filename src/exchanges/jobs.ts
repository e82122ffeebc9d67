// What the exchanges tasks do. Each re-reads the exchange and acts only if the job still
// applies; the rules (eligibility, idempotency keys, who is told) live in the SQL functions they
// call, so a DBA calling those by hand gets the same behaviour.
import type { Job, JobHelpers } from "graphile-worker";
import { notYetDue, skipped, type Skipped } from "../worker/task.ts";
import { assign } from "./match.ts";

type Query = JobHelpers["query"];

/** A reminder picked up later than this after its time is not sent (the source system's misfire grace). */
export const REMINDER_GRACE_MS = 60 * 60 * 1000;
/** A reminder picked up more than this before its time is early (SQL): it is put back, not sent. */
const REMINDER_EARLY = "interval '60 seconds'";

export async function matchExchange(query: Query, id: number, random?: () => number) {
  const { rows: ex } = await query<{ state: string }>("select state from app_public.exchanges where id = $1", [id]);
  if (!ex[0]) return skipped(`exchange ${id} no longer exists`);
  if (ex[0].state !== "MATCHING") return skipped(`exchange ${id} is ${ex[0].state}`);
  const { rows: people } = await query<{ id: string }>(
    "select id::text from app_public.participants where exchange_id = $1 and withdrawn_at is null order by id",
    [id],
  );
  const { rows: pairs } = await query<{ a: string; b: string }>(
    "select participant_a::text as a, participant_b::text as b from app_public.exclusions where exchange_id = $1",
    [id],
  );
  const result = assign({ participants: people.map((p) => p.id), exclusions: pairs.map((p) => [p.a, p.b] as const) }, random);
  if (!result.ok) {
    await query("select app_private.fail_exchange_matching($1, $2)", [id, result.reason]);
    return { matched: false, reason: result.reason };
  }
  const { rows } = await query<{ emails: number | null }>(
    "select app_private.record_exchange_matches($1, $2::bigint[], $3::bigint[]) as emails",
    [id, result.pairs.map((p) => p.giver), result.pairs.map((p) => p.receiver)],
  );
  if (rows[0]!.emails === null) return skipped(`exchange ${id} is no longer MATCHING`);
  return { matched: true, participants: result.pairs.length, emails: rows[0]!.emails };
}

export async function sendReminders(query: Query, job: Job, id: number, days: number): Promise<{ queued: number } | Skipped> {
  // On the database's clock, as the job's run_at is.
  const { rows } = await query<{ state: string; still: boolean; due_at: Date; early: boolean; late_ms: number }>(
    `select e.state, $2 = any (e.reminder_days) as still, r.at as due_at, r.at > now() + ${REMINDER_EARLY} as early,
            extract(epoch from now() - $3::timestamptz) * 1000 as late_ms
     from app_public.exchanges e, app_public.exchange_reminder_at(e.exchange_date, e.timezone, $2) r (at) where e.id = $1`,
    [id, days, job.run_at],
  );
  const e = rows[0];
  if (!e) return skipped(`exchange ${id} no longer exists`);
  if (e.state !== "MATCHED") return skipped(`exchange ${id} is ${e.state}`);
  if (!e.still) return skipped(`exchange ${id} no longer has a ${days}-day reminder`);
  if (e.late_ms > REMINDER_GRACE_MS) {
    return skipped(`picked up ${Math.round(e.late_ms / 60_000)} minutes after its time (grace: 60): not sent`);
  }
  if (e.early) {
    return notYetDue(query, job, {
      sql: `select r.at from app_public.exchanges e, app_public.exchange_reminder_at(e.exchange_date, e.timezone, $2) r (at)
            where e.id = $1 and e.state = 'MATCHED' and $2 = any (e.reminder_days) and r.at > now() + ${REMINDER_EARLY} for share of e`,
      params: [id, days],
    }, `the ${days}-day reminder of exchange ${id}`);
  }
  const { rows: q } = await query<{ queued: number }>("select app_private.queue_exchange_reminders($1, $2) as queued", [id, days]);
  return { queued: q[0]!.queued };
}

export async function completeExchange(query: Query, job: Job, id: number) {
  const { rows } = await query<{ completed_at: Date }>(
    `update app_public.exchanges set state = 'COMPLETED'
     where id = $1 and state = 'MATCHED' and exchange_date <= now() returning completed_at`,
    [id],
  );
  if (rows[0]) return { completedAt: rows[0].completed_at.toISOString() };
  const { rows: now } = await query<{ state: string }>("select state from app_public.exchanges where id = $1", [id]);
  if (!now[0]) return skipped(`exchange ${id} no longer exists`);
  if (now[0].state !== "MATCHED") return skipped(`exchange ${id} is ${now[0].state}`);
  return notYetDue(
    query,
    job,
    { sql: "select exchange_date from app_public.exchanges where id = $1 and state = 'MATCHED' and exchange_date > now() for share", params: [id] },
    `the completion of exchange ${id}`,
  );
}

/** A completed exchange's purge warning (23 days after completion, once) or purge (30 days), while it is still to come. */
const purgeStep = (id: number, step: "warning" | "purge") => ({
  sql: `select d.due from app_public.exchanges e,
          lateral (select e.completed_at + case $2 when 'warning' then interval '23 days' else interval '30 days' end as due) d
        where e.id = $1 and e.state = 'COMPLETED' and ($2 = 'purge' or e.purge_warning_sent_at is null) and d.due > now() for share of e`,
  params: [id, step],
});

// Not done: either not yet due (put back by notYetDue) or no longer coming (purgeStep selects nothing).
export async function sendPurgeWarning(query: Query, job: Job, id: number) {
  const { rows } = await query<{ warned: boolean }>("select app_private.send_exchange_purge_warning($1) as warned", [id]);
  if (rows[0]!.warned) return { warned: true };
  return notYetDue(query, job, purgeStep(id, "warning"), `the purge warning of exchange ${id}`, `exchange ${id}: no warning due (already sent, reopened or gone)`);
}

export async function purgeExchange(query: Query, job: Job, id: number) {
  const { rows } = await query<{ purged: boolean }>("select app_private.purge_exchange($1) as purged", [id]);
  if (rows[0]!.purged) return { purged: true };
  return notYetDue(query, job, purgeStep(id, "purge"), `the purge of exchange ${id}`, `exchange ${id} is not eligible for purging (reopened, younger or gone)`);
}
