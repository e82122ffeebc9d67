// Sends one recorded email (app_private.email_deliveries) at most once. The row is claimed
// (pending -> sending, with the claiming job and attempt) before anything goes out; a job that
// finds it sending, sent or failed does nothing — except the next attempt of the job whose
// earlier attempt claimed it: that attempt died mid-send (its worker was killed), so the delivery
// is marked failed as interrupted (it may or may not have arrived) and is not sent again. A transient failure puts it back to pending and throws (the job retries with backoff);
// a permanent one (5xx, or a template that cannot render) marks it failed, suppresses a refused
// address, and fails the job without retries.
import { createHash } from "node:crypto";
import type { JobHelpers } from "graphile-worker";
import type { Logger } from "../log.ts";
import { PermanentFailure, skipped, type TaskResult } from "../worker/task.ts";
import { errorText } from "../worker/redact.ts";
import type { Mailer } from "./mailer.ts";
import { fill, TemplateError } from "./render.ts";
import { isPermanentSmtpFailure } from "./transport.ts";

export interface Claimed {
  key: string;
  template: string;
  recipient: string;
  data: Record<string, unknown>;
  suppressed: boolean;
}

export type Query = JobHelpers["query"];

export const INTERRUPTED = "interrupted while sending (its worker stopped); it may or may not have arrived, and is not sent again";

/**
 * A named statement: PostgreSQL parses and plans it once per connection instead of on every
 * email (measured: a third of the server's CPU for a claim and its mark). graphile-worker's
 * helpers.query hands its first argument to pg's client.query, which takes a {name, text}
 * config as well as a string — the type only admits the string. A new config each time: pg writes
 * the values (and a pool its callback) into the object it is given.
 */
const named = (name: string, text: string) => () => ({ name, text }) as unknown as string;

const CLAIM = named(
  "hourglass_email_claim",
  `update app_private.email_deliveries d set state = 'sending', attempts = d.attempts + 1, claimed_by_job = $2, claimed_attempt = $3
   where d.id = $1 and d.state = 'pending'
   returning d.key, d.template, d.recipient, d.data,
     exists (select 1 from app_private.email_suppressions s where s.address = lower(d.recipient)) as suppressed`,
);

const MARK = named(
  "hourglass_email_mark",
  `update app_private.email_deliveries set state = $2, last_error = $3,
     message_id = case when $2 = 'sent' then $4 else message_id end,
     sent_at = case when $2 = 'sent' then now() else sent_at end
   where id = $1`,
);

/** The job attempt claiming a delivery: graphile-worker's job id and attempt number. */
export interface ClaimingJob {
  id: string;
  attempts: number;
}

/**
 * Claims a delivery for sending (pending -> sending). Null with the reason when it is not
 * pending: it is being sent, was sent, failed, or does not exist — or an earlier attempt of this
 * same job claimed it and died mid-send, in which case it is marked failed as interrupted.
 */
export async function claimDelivery(query: Query, deliveryId: number, job: ClaimingJob): Promise<Claimed | { notClaimed: string }> {
  const { rows } = await query<Claimed>(CLAIM(), [deliveryId, job.id, job.attempts]);
  if (rows[0]) return rows[0];
  const { rows: interrupted } = await query(
    `update app_private.email_deliveries set state = 'failed', last_error = $4
     where id = $1 and state = 'sending' and claimed_by_job = $2 and claimed_attempt < $3
     returning id`,
    [deliveryId, job.id, job.attempts, INTERRUPTED],
  );
  if (interrupted[0]) return { notClaimed: `delivery ${deliveryId} was ${INTERRUPTED}` };
  const { rows: current } = await query<{ state: string }>("select state from app_private.email_deliveries where id = $1", [deliveryId]);
  return { notClaimed: current[0] ? `delivery ${deliveryId} is ${current[0].state}` : `delivery ${deliveryId} does not exist` };
}

/**
 * Records an email to send now, from the task that needs it (no send_email job). Returns the
 * delivery id; an existing key returns the existing row's id.
 */
export async function recordDelivery(
  query: Query,
  email: { key: string; template: string; recipient: string; data: Record<string, unknown> },
): Promise<number> {
  const { rows } = await query<{ id: string }>(
    `with inserted as (
       insert into app_private.email_deliveries (key, template, recipient, data) values ($1, $2, $3, $4)
       on conflict on constraint email_deliveries_key_key do nothing returning id
     )
     select id::text from inserted union all select id::text from app_private.email_deliveries where key = $1 limit 1`,
    [email.key, email.template, email.recipient, JSON.stringify(email.data)],
  );
  return Number(rows[0]!.id);
}

export async function sendDelivery(deliveryId: number, job: ClaimingJob, deps: SendDeps): Promise<TaskResult> {
  const claimed = await claimDelivery(deps.query, deliveryId, job);
  if ("notClaimed" in claimed) return skipped(claimed.notClaimed);
  return sendClaimed(deliveryId, claimed, deps);
}

export interface SendDeps {
  query: Query;
  mailer: Mailer;
  log: Logger;
}

/**
 * Sends a claimed delivery. `secrets` are template values that must not be stored (a login link):
 * they are used for this rendering only, never written to the email log.
 */
export async function sendClaimed(
  deliveryId: number,
  claimed: Claimed,
  deps: SendDeps,
  secrets: Record<string, string> = {},
): Promise<TaskResult> {
  const { query, mailer, log } = deps;
  const messageId = `<${deliveryId}.${createHash("sha256").update(claimed.key).digest("hex").slice(0, 16)}@hourglass>`;
  const mark = (state: "pending" | "failed" | "sent", error: string | null) => query(MARK(), [deliveryId, state, error, messageId]);
  if (claimed.suppressed) {
    await mark("failed", "address suppressed");
    return skipped(`recipient of delivery ${deliveryId} is suppressed`);
  }

  const template = mailer.templates.get(claimed.template);
  let rendered;
  try {
    if (!template) throw new TemplateError(`Unknown email template ${claimed.template}`);
    rendered = fill(template, { ...claimed.data, ...secrets });
  } catch (err) {
    await mark("failed", errorText(err));
    throw new PermanentFailure(`Delivery ${deliveryId} cannot be rendered: ${errorText(err)}`, { cause: err });
  }

  try {
    await mailer.transport.send({ from: mailer.from, to: claimed.recipient, messageId, ...rendered });
  } catch (err) {
    if (isPermanentSmtpFailure(err)) {
      await mark("failed", errorText(err));
      await query(
        "insert into app_private.email_suppressions (address, reason) values (lower($1), $2) on conflict (address) do nothing",
        [claimed.recipient, errorText(err)],
      );
      log.warn("address refused permanently; suppressed", { delivery: deliveryId });
      throw new PermanentFailure(`Delivery ${deliveryId} refused: ${errorText(err)}`, { cause: err });
    }
    await mark("pending", errorText(err));
    throw err;
  }
  await mark("sent", null);
  return { sent: messageId, template: claimed.template };
}
