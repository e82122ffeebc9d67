// Emails a sign-in link. The token is minted here, after the email log row is claimed (so a
// retry after a successful send never invalidates the link the user already has), and only its
// SHA-256 is stored: the raw token exists in this process's memory and in the email, nowhere else
// (not the job payload, the job history, the email log or a log line). The claim and the token are
// written in one transaction: if the token's insert fails, the claim is undone too and the next
// attempt sends the link (a claim left behind would read as a send that was interrupted, and the
// user would get nothing).
import { createHash, randomBytes } from "node:crypto";
import { z } from "zod";
import { defineTask, PRIORITY, skipped } from "../src/worker/task.ts";
import { claimDelivery, recordDelivery, sendClaimed } from "../src/email/send.ts";

const TOKEN_MINUTES = 15;

export default defineTask({
  description: "Mints a single-use 15-minute login token and emails the sign-in link.",
  payload: z.object({ userId: z.number().int().positive() }),
  priority: PRIORITY.userFacing,
  maxAttempts: 5,
  timeLimitMs: 60_000,
  async run({ userId }, { query, withPgClient, services, config, job, log }) {
    const { rows } = await query<{ email: string }>("select email from app_public.users where id = $1", [userId]);
    const user = rows[0];
    if (!user) return skipped(`user ${userId} no longer exists`);

    const deliveryId = await recordDelivery(query, {
      key: `login_link:user:${userId}:job:${job.id}`,
      template: "login_link",
      recipient: user.email,
      data: { expiresMinutes: TOKEN_MINUTES },
    });
    const token = randomBytes(32).toString("base64url");
    const claimed = await withPgClient(async (client) => {
      await client.query("begin");
      try {
        const claim = await claimDelivery((text, values) => client.query(text, values), deliveryId, job);
        if (!("notClaimed" in claim)) {
          await client.query(
            `with invalidated as (
               update app_private.magic_tokens set used_at = now() where user_id = $1 and used_at is null
             )
             insert into app_private.magic_tokens (user_id, token_hash, expires_at)
             values ($1, $2, now() + make_interval(mins => $3))`,
            [userId, createHash("sha256").update(token).digest(), TOKEN_MINUTES],
          );
        }
        await client.query("commit");
        return claim;
      } catch (err) {
        await client.query("rollback").catch(() => {});
        throw err;
      }
    });
    if ("notClaimed" in claimed) return skipped(claimed.notClaimed);

    const link = `${config.accounts.appUrl}/login?token=${token}`;
    return sendClaimed(deliveryId, claimed, { query, mailer: services.mailer, log }, { link });
  },
});
