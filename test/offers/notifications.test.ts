// Who is told what, and when: the notification matrix of an offer's life, on every write path,
// with the skip rules (expiry, acceptance, decline and marking read are not renewals), the
// recipient's preferences, and exactly-once delivery.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, createTestDb, drainJobs, listJobs, makeJobsDue, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";
import { createCompany, createWorker, draftOffer, offer, sentOffer, type Company, type Worker } from "../helpers/offers.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let smtp: SmtpSink;
let acme: Company;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  smtp = await startSmtpSink();
  acme = await createCompany(db, 2);
});
afterAll(async () => {
  await smtp?.close();
  await db?.drop();
});

/** Runs every due job (notifications fan out, then email) until the queue holds nothing due. */
async function settle() {
  for (let i = 0; i < 4; i++) await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url }));
}

async function told(userId: string): Promise<string[]> {
  const { rows } = await db.pool.query("select type from app_public.notifications where user_id = $1 order by id", [userId]);
  return rows.map((r) => r.type);
}

async function emailed(address: string): Promise<string[]> {
  return smtp.received.filter((m) => m.to === address).map((m) => m.subject);
}

async function queuedFanOuts(): Promise<number> {
  return (await listJobs(db)).filter((j) => j.task_identifier === "offers__queue_notifications").length;
}

describe("offer notifications", () => {
  let w: Worker;
  let id: string;
  const member = () => acme.members[0]!.sessionId;

  it("a draft tells no one; sending tells the worker, in the app and by email", async () => {
    w = await createWorker(db);
    id = await draftOffer(db, acme, w);
    expect(await queuedFanOuts()).toBe(0);
    await asUser(db, member(), (c) => c.query("select app_public.send_offer($1)", [id]));
    await settle();
    expect(await told(w.user.id)).toEqual(["offer.sent"]);
    expect(await emailed(w.user.email)).toEqual([expect.stringMatching(/^New offer from Company \w+: Day shift rigger$/)]);
    for (const m of acme.members) expect(await told(m.id)).toEqual([]);
    const { rows } = await db.pool.query("select emailed from app_public.notifications where user_id = $1", [w.user.id]);
    expect(rows).toEqual([{ emailed: true }]);
  });

  it("marking read, and moving only expires_at, are not renewals", async () => {
    await asUser(db, w.user.sessionId, (c) => c.query("select app_public.mark_offer_read($1)", [id]));
    await db.pool.query("update app_public.offers set expires_at = expires_at + interval '1 day' where id = $1", [id]);
    expect(await queuedFanOuts()).toBe(0);
    expect((await offer(db, id)).is_read).toBe(true);
  });

  it("changing the content renews the offer: unread again, and the worker is told", async () => {
    await asUser(db, member(), (c) => c.query("select app_public.update_offer($1, 'Now with parking', '2030-01-06', '2030-02-28', 7)", [id]));
    expect((await offer(db, id)).is_read).toBe(false);
    await settle();
    expect(await told(w.user.id)).toEqual(["offer.sent", "offer.renewed"]);
  });

  it("expiry tells the worker it expired, and is not a renewal", async () => {
    await db.pool.query("update app_public.offers set expires_at = now() - interval '1 second' where id = $1", [id]);
    await makeJobsDue(db);
    await settle();
    expect((await offer(db, id)).status).toBe("EXPIRED");
    expect(await told(w.user.id)).toEqual(["offer.sent", "offer.renewed", "offer.expired"]);
    for (const m of acme.members) expect(await told(m.id)).toEqual([]);
  });

  it("renewing an expired offer sends it again; accepting tells every company member, not the worker, and is not a renewal", async () => {
    await asUser(db, member(), (c) => c.query("select app_public.update_offer($1, 'Second chance', '2030-01-06', '2030-02-28', 3)", [id]));
    expect((await offer(db, id)).status).toBe("SENT");
    await settle();
    await asUser(db, w.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [id]));
    await settle();
    expect(await told(w.user.id)).toEqual(["offer.sent", "offer.renewed", "offer.expired", "offer.renewed"]);
    for (const m of acme.members) {
      expect(await told(m.id)).toEqual(["offer.accepted"]);
      expect(await emailed(m.email)).toEqual([`Wanda Worker accepted the offer for Day shift rigger`]);
    }
  });

  it("declining tells every company member, with the reason; a 'new offer' that runs after the answer is skipped", async () => {
    const w2 = await createWorker(db);
    const id2 = await sentOffer(db, acme, w2);
    await asUser(db, w2.user.sessionId, (c) => c.query("select app_public.reject_offer($1, 'DATES_UNAVAILABLE', 'Away in January')", [id2]));
    await settle();
    expect(await told(w2.user.id)).toEqual([]);
    for (const m of acme.members) expect(await told(m.id)).toEqual(["offer.accepted", "offer.rejected"]);
    const { rows } = await db.pool.query("select body from app_public.notifications where user_id = $1 and type = 'offer.rejected'", [
      acme.members[0]!.id,
    ]);
    expect(rows[0].body).toContain("the dates do not work");
    expect(rows[0].body).toContain("Away in January");
  });

  it("withdrawing tells no one and leaves no job behind", async () => {
    const w3 = await createWorker(db);
    const id3 = await sentOffer(db, acme, w3);
    await settle();
    await asUser(db, member(), (c) => c.query("select app_public.withdraw_offer($1, 'Filled internally')", [id3]));
    expect(await listJobs(db)).toEqual([]);
    expect(await told(w3.user.id)).toEqual(["offer.sent"]);
  });

  it("follows the recipient's preferences per type: in-app only, email only", async () => {
    const p = await createWorker(db);
    await db.pool.query(
      `insert into app_public.notification_preferences (user_id, type, in_app, email)
       values ($1, 'offer.sent', true, false), ($1, 'offer.renewed', false, true)`,
      [p.user.id],
    );
    const pid = await sentOffer(db, acme, p);
    await settle();
    await asUser(db, member(), (c) => c.query("select app_public.update_offer($1, 'Changed', '2030-01-06', '2030-02-28', 7)", [pid]));
    await settle();
    expect(await told(p.user.id)).toEqual(["offer.sent"]);
    expect(await emailed(p.user.email)).toEqual(["Offer updated: Day shift rigger"]);
    const { rows } = await db.pool.query("select emailed from app_public.notifications where user_id = $1", [p.user.id]);
    expect(rows).toEqual([{ emailed: false }]);
  });

  it("a repeated fan-out tells no one twice", async () => {
    const r = await createWorker(db);
    const rid = await sentOffer(db, acme, r);
    await settle();
    const change = "repeat-test";
    for (let i = 0; i < 2; i++) {
      await db.pool.query("select app_private.queue_offer_notifications('renewed', array[$1::bigint], $2)", [rid, change]);
      await settle();
    }
    expect(await told(r.user.id)).toEqual(["offer.sent", "offer.renewed"]);
    expect(await emailed(r.user.email)).toHaveLength(2);
  });

  it("a DBA's bulk UPDATE fires the same notifications as the mutations", async () => {
    const bulk = await Promise.all([createWorker(db), createWorker(db), createWorker(db)]);
    const ids = [];
    for (const b of bulk) ids.push(await draftOffer(db, acme, b));
    await db.pool.query("update app_public.offers set status = 'SENT' where id = any($1::bigint[])", [ids]);
    await db.pool.query("update app_public.offers set message = 'Typo fixed' where id = any($1::bigint[])", [ids]);
    await settle();
    for (const b of bulk) expect(await told(b.user.id)).toEqual(["offer.sent", "offer.renewed"]);
  });
});
