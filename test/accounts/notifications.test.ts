// Notifications: own-only access, preferences, retention and the once-a-day digest email.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asVisitor, createTestDb, createUser, drainJobs, jobRuns, signIn, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let smtp: SmtpSink;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  smtp = await startSmtpSink();
});
afterAll(async () => {
  await smtp?.close();
  await db?.drop();
});

async function notify(userId: string, title: string, opts: { type?: string; age?: string; read?: boolean; emailed?: boolean } = {}) {
  const { rows } = await db.pool.query<{ id: string }>(
    `insert into app_public.notifications (user_id, type, title, created_at, is_read, read_at, emailed)
     values ($1, $2, $3, now() - $4::interval, $5, case when $5 then now() end, $6) returning id::text`,
    [userId, opts.type ?? "offer.sent", title, opts.age ?? "1 minute", opts.read ?? false, opts.emailed ?? false],
  );
  return rows[0]!.id;
}

describe("notifications", () => {
  it("a user sees and marks read only their own", async () => {
    const a = await createUser(db);
    const b = await createUser(db);
    const a1 = await notify(a.id, "a1");
    await notify(a.id, "a2");
    const b1 = await notify(b.id, "b1");
    const { sessionId } = await signIn(db, a.id);
    await asVisitor(db, sessionId, async (c) => {
      expect((await c.query("select title from app_public.notifications order by title")).rows.map((r) => r.title)).toEqual(["a1", "a2"]);
      expect((await c.query("select app_public.mark_notifications_read($1::bigint[]) as n", [[a1, b1]])).rows[0].n).toBe(1);
      expect((await c.query("select app_public.mark_all_notifications_read() as n")).rows[0].n).toBe(1);
      await expect(c.query("update app_public.notifications set title = 'x'")).rejects.toMatchObject({ code: "42501" });
    });
    const { rows } = await db.pool.query("select is_read from app_public.notifications where id = $1", [b1]);
    expect(rows[0].is_read).toBe(false);
  });

  it("preferences belong to their user: set for oneself, invisible to others", async () => {
    const a = await createUser(db);
    const b = await createUser(db);
    const sa = await signIn(db, a.id);
    const sb = await signIn(db, b.id);
    // A user can set their own preference; naming another user is refused by the column grants.
    await asVisitor(db, sa.sessionId, async (c) => {
      await c.query("insert into app_public.notification_preferences (type, email) values ('offer.sent', false)");
      expect((await c.query("select user_id::text from app_public.notification_preferences")).rows).toEqual([{ user_id: a.id }]);
      await expect(c.query("insert into app_public.notification_preferences (user_id, type) values ($1, 'x')", [b.id])).rejects.toMatchObject({ code: "42501" });
    });
    await db.pool.query("insert into app_public.notification_preferences (user_id, type, email) values ($1, 'offer.sent', false)", [a.id]);
    expect(await asVisitor(db, sb.sessionId, async (c) => (await c.query("select * from app_public.notification_preferences")).rows)).toEqual([]);
    expect(await asVisitor(db, sa.sessionId, async (c) => (await c.query("select type, email from app_public.notification_preferences")).rows)).toEqual([
      { type: "offer.sent", email: false },
    ]);
  });

  it("notifications__cleanup deletes read notifications past retention, nothing else", async () => {
    const u = await createUser(db);
    const old = await notify(u.id, "old read", { age: "40 days", read: true });
    await notify(u.id, "recent read", { age: "2 days", read: true });
    await notify(u.id, "old unread", { age: "40 days" });
    await db.pool.query("select app_private.add_job('notifications__cleanup', '{\"batchSize\": 1}')");
    await drainJobs(db, tasks);
    expect((await jobRuns(db, "notifications__cleanup")).at(-1)).toMatchObject({ outcome: "succeeded", result: { deleted: 1, remaining: 0 } });
    const { rows } = await db.pool.query("select title from app_public.notifications where user_id = $1 order by title", [u.id]);
    expect(rows.map((r) => r.title)).toEqual(["old unread", "recent read"]);
    expect((await db.pool.query("select 1 from app_public.notifications where id = $1", [old])).rowCount).toBe(0);
  });

  it("the digest emails each user once a day with their unread notifications that email preferences allow", async () => {
    await db.pool.query("delete from app_public.notifications");
    const a = await createUser(db, { email: "digest-a@example.com" });
    const b = await createUser(db, { email: "digest-b@example.com" });
    const c = await createUser(db, { email: "digest-c@example.com" });
    const d = await createUser(db, { email: "digest-d@example.com" });
    await notify(a.id, "Offer from ACME", { age: "3 hours" });
    await notify(a.id, "Offer <from> Initech", { age: "1 hour" });
    await notify(b.id, "muted kind", { type: "muted.kind" });
    await db.pool.query("insert into app_public.notification_preferences (user_id, type, email) values ($1, 'muted.kind', false)", [b.id]);
    await notify(c.id, "already read", { read: true });
    await notify(d.id, "too old", { age: "2 days" });
    // Emailed on their own already (an offer's event): left out, and a user with only those gets no digest.
    await notify(a.id, "Emailed already", { age: "2 hours", emailed: true });
    const e = await createUser(db, { email: "digest-e@example.com" });
    await notify(e.id, "Emailed already", { emailed: true });

    const asOf = new Date().toISOString();
    for (let i = 0; i < 2; i++) {
      await db.pool.query("select app_private.add_job('notifications__send_digest', json_build_object('asOf', $1::text))", [asOf]);
      await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url }));
    }
    expect((await jobRuns(db, "notifications__send_digest")).map((r) => (r.result as { queued: number }).queued)).toEqual([1, 0]);
    expect(smtp.received.map((m) => m.to)).toEqual(["digest-a@example.com"]);
    const mail = smtp.received[0]!;
    expect(mail.subject).toBe("Your Hourglass digest: 2 unread");
    expect(mail.text).toContain("- Offer from ACME\n- Offer <from> Initech");
    expect(mail.text).not.toContain("Emailed already");
    expect(mail.html).toContain("Offer &lt;from&gt; Initech");
  });
  it("a title or body built past the table's limits is shortened with an ellipsis, in the app and the email alike", async () => {
    const u = await createUser(db, { email: "long-names@example.com" });
    // An offer's title is a company's name and a job's title, up to 200 characters each.
    const title = `${"C".repeat(150)} offers you ${"J".repeat(150)}`;
    const body = "b".repeat(6000);
    const { rows } = await db.pool.query("select app_private.notify($1, 'offer.sent', $2, $3, '{}', 'test:long-names') as told", [u.id, title, body]);
    expect(rows[0].told).toBe(true);
    const expectedTitle = `${title.slice(0, 199)}…`;
    const { rows: shown } = await db.pool.query("select title, body from app_public.notifications where key = 'test:long-names'");
    expect(shown).toEqual([{ title: expectedTitle, body: `${body.slice(0, 4999)}…` }]);
    const { rows: mail } = await db.pool.query("select data->>'title' as title, length(data->>'body') as body from app_private.email_deliveries where key = 'notification:test:long-names'");
    expect(mail).toEqual([{ title: expectedTitle, body: 5000 }]);
  });
});
