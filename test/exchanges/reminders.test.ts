// Reminders: scheduled by the exchanges triggers at the exchange's local wall-clock time N days
// before it (true across DST and odd offsets), moved and removed with the exchange, sent once per
// opted-in participant, and skipped when picked up more than an hour late.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, createTestDb, drainJobs, jobRuns, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";
import { createExchange, exchangeJobs, person, withParticipants } from "../helpers/exchanges.ts";

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

const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));
const matched = (id: string) => db.pool.query("update app_public.exchanges set state = 'MATCHED' where id = $1", [id]);

describe("reminder schedule", () => {
  it.each([
    // 18:00 EST on 10 November; 7 days earlier New York is still on EDT: 18:00 local is 22:00 UTC.
    ["America/New_York", "2027-11-10T23:00:00Z", "2027-11-03T22:00:00.000Z"],
    // No DST, a half-hour offset: 04:30 local both days.
    ["Asia/Kolkata", "2027-11-10T23:00:00Z", "2027-11-03T23:00:00.000Z"],
    // A 45-minute offset with DST (ends 4 April 2027, 03:45 → 02:45): 22:45 local on 10 April is
    // 10:00 UTC (+12:45); 22:45 local on 3 April is 09:00 UTC (+13:45).
    ["Pacific/Chatham", "2027-04-10T10:00:00Z", "2027-04-03T09:00:00.000Z"],
  ])("in %s, an exchange at %s gets its 7-day reminder at %s", async (timezone, date, expected) => {
    const organiser = await person(db);
    const id = await createExchange(db, organiser, { date, timezone, reminderDays: [7] });
    expect(await exchangeJobs(db, id)).toEqual({});
    await matched(id);
    const jobs = await exchangeJobs(db, id);
    expect(jobs["reminder:7"]!.runAt.toISOString()).toBe(expected);
    expect(jobs["complete"]!.runAt.toISOString()).toBe(new Date(date).toISOString());
  });

  it("a new date moves the same jobs (no duplicates); removed days and leaving MATCHED remove theirs; past reminders are not scheduled", async () => {
    const organiser = await person(db);
    const id = await createExchange(db, organiser, { date: "2030-12-20T18:00:00Z", timezone: "Europe/Paris", reminderDays: [7, 3, 1] });
    await matched(id);
    const before = await exchangeJobs(db, id);
    expect(Object.keys(before).sort()).toEqual(["complete", "reminder:1", "reminder:3", "reminder:7"]);

    await asUser(db, organiser.sessionId, (c) =>
      c.query("select app_public.update_exchange($1, 'Office party', 'Be nice', 25, '2030-12-21T18:00:00Z', 'Europe/Paris')", [id]),
    );
    const moved = await exchangeJobs(db, id);
    expect(Object.keys(moved).sort()).toEqual(Object.keys(before).sort());
    for (const k of Object.keys(moved)) {
      expect(moved[k]!.id).toBe(before[k]!.id);
      expect(moved[k]!.runAt.getTime() - before[k]!.runAt.getTime()).toBe(86_400_000);
    }

    await asUser(db, organiser.sessionId, (c) => c.query("select app_public.set_reminder_days($1, '{7}')", [id]));
    expect(Object.keys(await exchangeJobs(db, id)).sort()).toEqual(["complete", "reminder:7"]);

    // A DBA moves the exchange to the day after tomorrow: the 7-day reminder is in the past.
    await db.pool.query("update app_public.exchanges set exchange_date = now() + interval '2 days', reminder_days = '{7,1}' where id = $1", [id]);
    expect(Object.keys(await exchangeJobs(db, id)).sort()).toEqual(["complete", "reminder:1"]);

    await db.pool.query("update app_public.exchanges set state = 'REGISTRATION_CLOSED' where id = $1", [id]);
    expect(await exchangeJobs(db, id)).toEqual({});
  });
});

describe("reminder changes", () => {
  it("a reminder that is due but not yet run keeps its job when another day is added", async () => {
    const organiser = await person(db);
    const id = await createExchange(db, organiser, { reminderDays: [3] });
    // Its 3-day reminder fell due a minute ago (the job may still be queued).
    await db.pool.query("update app_public.exchanges set exchange_date = now() + interval '3 days' - interval '1 minute' where id = $1", [id]);
    const { rows } = await db.pool.query(
      `select c.job_key, c.remove
       from app_public.exchanges e
       cross join lateral app_private.exchange_job_changes(
         jsonb_populate_record(null::app_public.exchanges, to_jsonb(e) || '{"state": "MATCHED", "reminder_days": [3, 14]}'),
         jsonb_populate_record(null::app_public.exchanges, to_jsonb(e) || '{"state": "MATCHED", "reminder_days": [3]}')) c
       where e.id = $1`,
      [id],
    );
    expect(rows).toEqual([]);
  });
});

describe("sending reminders", () => {
  it("emails each opted-in participant once; the withdrawn and the opted-out get nothing", async () => {
    const organiser = await person(db);
    const [stays, leaves, quiet] = [await person(db), await person(db), await person(db)];
    const id = await createExchange(db, organiser, { date: new Date(Date.now() + 10 * 86_400_000).toISOString(), reminderDays: [3] });
    await withParticipants(db, organiser, id, [stays, leaves, quiet]);
    await asUser(db, leaves.sessionId, (c) => c.query("select app_public.withdraw_from_exchange($1)", [id]));
    await asUser(db, quiet.sessionId, (c) => c.query("select app_public.set_exchange_reminders($1, false)", [id]));
    await matched(id);
    // A DBA moves the exchange so that its 3-day reminder is due in 20 seconds; the job moves with
    // it, and is then made due now (time through data, not sleeping).
    await db.pool.query("update app_public.exchanges set exchange_date = now() + interval '3 days 20 seconds' where id = $1", [id]);
    const { rows } = await db.pool.query(
      "select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), run_at := now()) as job",
      [`exchanges:${id}:reminder:3`],
    );
    expect(rows).toHaveLength(1);
    const config = testConfig(db, { SMTP_URL: smtp.url });
    await drainJobs(db, only("exchanges__send_reminders", "send_email"), config);
    await drainJobs(db, only("send_email"), config);
    expect(smtp.received.map((m) => m.to)).toEqual([stays.email]);
    expect(smtp.received[0]!.subject).toBe("Reminder: Office party is in 3 days");

    // The same reminder again (a retry, a duplicate job): nothing new.
    await db.pool.query("select app_private.add_job('exchanges__send_reminders', json_build_object('id', $1::bigint, 'days', 3))", [id]);
    await drainJobs(db, only("exchanges__send_reminders", "send_email"), config);
    expect(smtp.received).toHaveLength(1);
    expect((await jobRuns(db, "exchanges__send_reminders")).map((r) => r.result)).toEqual([{ queued: 1 }, { queued: 0 }]);
  });

  it("a reminder run before its time (an admin's rescheduleJob to now) sends nothing and goes back to its time", async () => {
    const organiser = await person(db);
    const id = await createExchange(db, organiser, { date: new Date(Date.now() + 10 * 86_400_000).toISOString(), reminderDays: [3] });
    await withParticipants(db, organiser, id, [await person(db), await person(db)]);
    await matched(id);
    const dueAt = (await exchangeJobs(db, id))["reminder:3"]!.runAt;
    const sent = smtp.received.length;
    await db.pool.query("select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), run_at := now())", [
      `exchanges:${id}:reminder:3`,
    ]);
    await drainJobs(db, only("exchanges__send_reminders", "send_email"), testConfig(db, { SMTP_URL: smtp.url }));
    const run = (await jobRuns(db, "exchanges__send_reminders")).at(-1)!;
    expect(run.outcome).toBe("skipped");
    expect(run.result).toMatchObject({ skipped: expect.stringContaining("put back") });
    expect(smtp.received).toHaveLength(sent);
    expect((await exchangeJobs(db, id))["reminder:3"]!.runAt).toEqual(dueAt);
  });

  it("a reminder picked up more than an hour after its time is skipped, and the history says so", async () => {
    const organiser = await person(db);
    const id = await createExchange(db, organiser, { date: new Date(Date.now() + 10 * 86_400_000).toISOString(), reminderDays: [3] });
    await withParticipants(db, organiser, id, [await person(db), await person(db)]);
    await matched(id);
    const sent = smtp.received.length;
    // As if the workers had been down: the job's time was 61 minutes ago.
    await db.pool.query(
      "select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), run_at := now() - interval '61 minutes')",
      [`exchanges:${id}:reminder:3`],
    );
    await drainJobs(db, only("exchanges__send_reminders", "send_email"), testConfig(db, { SMTP_URL: smtp.url }));
    const run = (await jobRuns(db, "exchanges__send_reminders")).at(-1)!;
    expect(run.outcome).toBe("skipped");
    expect(run.result).toMatchObject({ skipped: expect.stringContaining("61 minutes after its time") });
    expect(smtp.received).toHaveLength(sent);
  });
});
