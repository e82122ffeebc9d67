// The weekly report: every admin gets one email for the week before (Monday to Monday, UTC) with
// jobs by task and outcome, the slowest tasks, failures, offers and exchanges completed — once,
// however many times the job runs for that week.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, createTestDb, createUser, drainJobs, jobRuns, testConfig, type TestDb } from "../helpers/db.ts";
import { createExchange, person } from "../helpers/exchanges.ts";
import { createCompany, createWorker, sentOffer } from "../helpers/offers.ts";
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

describe("weekly report", () => {
  it("emails each admin once per week with the week's jobs, slowest tasks, failures, offers and exchanges", async () => {
    await createUser(db, { email: "admin-1@example.com", isAdmin: true });
    await createUser(db, { email: "admin-2@example.com", isAdmin: true });
    await createUser(db, { email: "not-an-admin@example.com" });

    // The report for the week that contains now is sent next Monday at 08:00.
    const { rows: [w] } = await db.pool.query<{ start: Date; as_of: Date; week: string }>(
      `select date_trunc('week', now() at time zone 'UTC') at time zone 'UTC' as start,
              (date_trunc('week', now() at time zone 'UTC') + interval '7 days 8 hours') at time zone 'UTC' as as_of,
              to_char(now() at time zone 'UTC', 'IYYY-"W"IW') as week`,
    );
    // History inside the week (and one run just after it, which must not count).
    await db.pool.query(
      `insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, finished_at, duration_ms, outcome, error)
       select gen_random_uuid(), 9000 + g, t, 1, 3, 'test:1', $1::timestamptz + make_interval(hours => g), $1::timestamptz + make_interval(hours => g), d, o, e
       from (values (1, 't_fast', 100, 'succeeded', null), (2, 't_fast', 200, 'succeeded', null), (3, 't_fast', 300, 'succeeded', null),
                    (4, 't_fast', 50, 'failed_retrying', 'boom <a>'), (5, 't_slow', 9000, 'timed_out', 'too slow'),
                    (6, 't_slow', 8000, 'timed_out', 'too slow again'), (200, 't_fast', 1, 'failed_permanently', 'next week')) v(g, t, d, o, e)`,
      [w!.start],
    );
    // Offers this week: two sent, one of them accepted. An exchange completed.
    const company = await createCompany(db);
    const worker = await createWorker(db);
    const accepted = await sentOffer(db, company, worker);
    await sentOffer(db, company, await createWorker(db));
    await asUser(db, worker.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [accepted]));
    const exchange = await createExchange(db, await person(db));
    await db.pool.query("update app_public.exchanges set state = 'COMPLETED', completed_at = now() where id = $1", [exchange]);

    // Let the offers' own jobs (notifications, emails) run first: they are part of the week too.
    await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url }));
    const { rows: [{ n: otherRuns }] } = await db.pool.query(
      "select count(*)::int as n from app_public.job_runs where started_at >= $1 and started_at < $1::timestamptz + interval '7 days' and task_identifier not like 't\\_%'",
      [w!.start],
    );

    // The tick, a retry of it and a backfilled run later the same week: one email per admin.
    for (const asOf of [w!.as_of, w!.as_of, new Date(w!.as_of.getTime() + 2 * 86_400_000)]) {
      await db.pool.query("select app_private.add_job('reports__send_weekly', json_build_object('asOf', $1::text))", [asOf.toISOString()]);
      await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url }));
    }
    expect((await jobRuns(db, "reports__send_weekly")).map((r) => r.result)).toEqual([
      { queued: 2, week: w!.week },
      { queued: 0, week: w!.week },
      { queued: 0, week: w!.week },
    ]);
    // (The offers also emailed their workers.)
    const reports = smtp.received.filter((m) => m.subject.startsWith("Hourglass weekly report"));
    expect(reports.map((m) => m.to).sort()).toEqual(["admin-1@example.com", "admin-2@example.com"]);

    const mail = reports[0]!;
    expect(mail.subject).toBe(`Hourglass weekly report, ${w!.week}`);
    // Finished runs only: the report's own run was still going when it counted.
    expect(otherRuns).toBeGreaterThan(0);
    expect(mail.text).toContain(`${otherRuns + 6} job runs, 1 exchanges completed.`);
    expect(mail.text).toMatch(/\nt_fast: 4 runs \(1 failed_retrying, 3 succeeded\)\n/);
    expect(mail.text).toMatch(/\nt_slow: 2 runs \(2 timed_out\)\n/);
    expect(mail.text).toMatch(/Slowest tasks\nt_slow: p95 8950(\.0)? ms, max 9000(\.0)? ms, average 8500(\.0)? ms over 2 runs\n/);
    expect(mail.text).toContain("Failures\nt_slow: 2 failed runs; last: too slow again\nt_fast: 1 failed runs; last: boom <a>\n");
    expect(mail.text).toContain("2 sent, 1 accepted, 0 declined, 0 withdrawn, 0 expired");
    expect(mail.text).not.toContain("next week");
    expect(mail.html).toContain("boom &lt;a&gt;");
  });

  it("says so when nothing happened, and sends the next week's report again", async () => {
    const { rows: [w] } = await db.pool.query<{ as_of: Date }>(
      "select (date_trunc('week', now() at time zone 'UTC') + interval '28 days 8 hours') at time zone 'UTC' as as_of",
    );
    const before = smtp.received.length;
    await db.pool.query("select app_private.add_job('reports__send_weekly', json_build_object('asOf', $1::text))", [w!.as_of.toISOString()]);
    await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url }));
    const mails = smtp.received.slice(before);
    expect(mails).toHaveLength(2);
    expect(mails[0]!.text).toContain("No jobs ran.");
    expect(mails[0]!.text).toContain("No failures.");
  });
});
