// Offer expiry: a job per SENT offer at its exact expires_at, scheduled by statement-level
// triggers on every write path, and an hourly sweep as the safety net.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { startWorker } from "../../src/worker/runner.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, createTestDb, drainJobs, jobRuns, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { createCompany, createWorker, draftOffer, expiryJobs, offer, sentOffer, type Company } from "../helpers/offers.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let company: Company;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  company = await createCompany(db);
});
afterAll(async () => {
  await db?.drop();
});

const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));

describe("offer expiry", () => {
  it("an offer sent with a 3-second window is EXPIRED within a second or two of expires_at, with no sweep involved", async () => {
    const worker = await createWorker(db);
    const id = await sentOffer(db, company, worker);
    // A DBA shortens the window; the trigger reschedules the same job.
    await db.pool.query("update app_public.offers set expires_at = now() + interval '3 seconds' where id = $1", [id]);
    const runner = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db), tasks, log: testLog, crontabFile: null });
    try {
      const deadline = Date.now() + 15_000;
      while ((await offer(db, id)).status !== "EXPIRED" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    } finally {
      await runner.stop();
    }
    const o = await offer(db, id);
    expect(o.status).toBe("EXPIRED");
    const lateMs = o.expired_at.getTime() - o.expires_at.getTime();
    expect(lateMs).toBeGreaterThanOrEqual(0);
    expect(lateMs).toBeLessThan(2000);
    expect((await jobRuns(db, "offers__expire")).map((r) => r.outcome)).toEqual(["succeeded"]);
    expect(await jobRuns(db, "offers__expire_overdue")).toEqual([]);
  });

  it("sending schedules one job at expires_at under offers:<id>:expire; a rolled-back send schedules nothing", async () => {
    const worker = await createWorker(db);
    const id = await draftOffer(db, company, worker, 3);
    await expect(
      asUser(db, company.members[0]!.sessionId, async (c) => {
        await c.query("select app_public.send_offer($1)", [id]);
        throw new Error("the client gave up");
      }),
    ).rejects.toThrow("the client gave up");
    expect(await expiryJobs(db, id)).toEqual([]);
    expect((await offer(db, id)).status).toBe("DRAFT");

    await asUser(db, company.members[0]!.sessionId, (c) => c.query("select app_public.send_offer($1)", [id]));
    const o = await offer(db, id);
    expect(o.expires_at.getTime() - o.sent_at.getTime()).toBe(3 * 86_400_000);
    const jobs = await expiryJobs(db, id);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.run_at).toEqual(o.expires_at);
  });

  it("a renewal moves the same job; withdrawing removes it", async () => {
    const worker = await createWorker(db);
    const id = await sentOffer(db, company, worker, 2);
    const [before] = await expiryJobs(db, id);
    await asUser(db, company.members[0]!.sessionId, (c) =>
      c.query("select app_public.update_offer($1, 'Better rate', '2030-01-06', '2030-02-28', 5)", [id]),
    );
    const o = await offer(db, id);
    const after = await expiryJobs(db, id);
    expect(after).toHaveLength(1);
    expect(after[0]!.id).toBe(before!.id);
    expect(after[0]!.run_at).toEqual(o.expires_at);
    expect(o.expires_at.getTime() - Date.now()).toBeGreaterThan(4 * 86_400_000);

    await asUser(db, company.members[0]!.sessionId, (c) => c.query("select app_public.withdraw_offer($1, 'Position filled')", [id]));
    expect(await expiryJobs(db, id)).toEqual([]);
  });

  it("a bulk UPDATE of 10,000 drafts schedules 10,000 expiry jobs; moving expires_at reschedules them; withdrawing removes them", async () => {
    const bulk = await createCompany(db);
    // Workers without a linked user: nobody to notify, so the queue holds only what is asserted.
    await db.pool.query(
      `with w as (insert into app_public.workers (name) select 'bulk ' || g from generate_series(1, 10000) g returning id),
            a as (insert into app_public.job_applications (job_id, worker_id) select $1, w.id from w returning id)
       insert into app_public.offers (application_id, start_date, end_date, expiration_days)
       select a.id, '2030-01-01', '2030-01-31', 1 + a.id % 10 from a`,
      [bulk.jobId],
    );
    const counts = async () => {
      const { rows } = await db.pool.query<{ jobs: number; keys: number; on_time: number }>(
        `select count(*)::int as jobs, count(distinct j.key)::int as keys,
                count(*) filter (where j.run_at = o.expires_at)::int as on_time
         from graphile_worker.jobs j
         join app_public.offers o on j.key = 'offers:' || o.id || ':expire'
         where o.company_id = $1`,
        [bulk.id],
      );
      return rows[0];
    };
    await db.pool.query("update app_public.offers set status = 'SENT' where company_id = $1 and status = 'DRAFT'", [bulk.id]);
    expect(await counts()).toEqual({ jobs: 10000, keys: 10000, on_time: 10000 });

    await db.pool.query("update app_public.offers set expires_at = expires_at + interval '1 day' where company_id = $1", [bulk.id]);
    expect(await counts()).toEqual({ jobs: 10000, keys: 10000, on_time: 10000 });

    await db.pool.query(
      "update app_public.offers set status = 'WITHDRAWN', withdrawal_reason = 'Project cancelled' where company_id = $1",
      [bulk.id],
    );
    expect(await counts()).toEqual({ jobs: 0, keys: 0, on_time: 0 });
    const { rows } = await db.pool.query(
      "select count(*)::int as n from app_public.offers where company_id = $1 and status = 'WITHDRAWN' and withdrawn_at is not null",
      [bulk.id],
    );
    expect(rows[0].n).toBe(10000);
  });

  it("offers__expire does nothing to an offer that is no longer SENT, or not yet due", async () => {
    const worker = await createWorker(db);
    const accepted = await sentOffer(db, company, worker);
    await asUser(db, worker.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [accepted]));
    const notDue = await sentOffer(db, company, await createWorker(db));
    await db.pool.query("select app_private.add_job('offers__expire', json_build_object('id', $1::bigint))", [accepted]);
    await db.pool.query("select app_private.add_job('offers__expire', json_build_object('id', $1::bigint))", [notDue]);
    await drainJobs(db, only("offers__expire"));
    const runs = (await jobRuns(db, "offers__expire")).slice(-2);
    expect(runs.map((r) => r.outcome)).toEqual(["skipped", "skipped"]);
    expect((await offer(db, accepted)).status).toBe("ACCEPTED");
    expect((await offer(db, notDue)).status).toBe("SENT");
  });
});

describe("an expiry job run before its time", () => {
  it("(an admin's rescheduleJob to now) expires nothing and goes back to expires_at under its key", async () => {
    const id = await sentOffer(db, company, await createWorker(db));
    const { expires_at } = await offer(db, id);
    await db.pool.query("select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), run_at := now())", [`offers:${id}:expire`]);
    await drainJobs(db, only("offers__expire"));
    const run = (await jobRuns(db, "offers__expire")).at(-1)!;
    expect(run.outcome).toBe("skipped");
    expect(run.result).toMatchObject({ skipped: expect.stringContaining("put back") });
    expect((await offer(db, id)).status).toBe("SENT");
    const jobs = await expiryJobs(db, id);
    expect(jobs.map((j) => j.run_at)).toEqual([expires_at]);
  });
});

describe("offers__expire_overdue (the hourly safety net)", () => {
  it("expires an overdue SENT offer that has no job, and leaves everything else alone", async () => {
    const c = await createCompany(db);
    const lost = await sentOffer(db, c, await createWorker(db));
    const future = await sentOffer(db, c, await createWorker(db));
    const draft = await draftOffer(db, c, await createWorker(db));
    const w = await createWorker(db);
    const accepted = await sentOffer(db, c, w);
    await asUser(db, w.user.sessionId, (cl) => cl.query("select app_public.accept_offer($1)", [accepted]));
    // Backdate two offers, then lose the overdue one's job (as if a DBA deleted it).
    await db.pool.query("update app_public.offers set expires_at = now() - interval '2 hours' where id = any($1::bigint[])", [[lost, accepted]]);
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where key = $1))", [`offers:${lost}:expire`]);
    expect(await expiryJobs(db, lost)).toEqual([]);

    await db.pool.query("select app_private.add_job('offers__expire_overdue', '{}')");
    await drainJobs(db, only("offers__expire_overdue"));
    expect((await jobRuns(db, "offers__expire_overdue")).at(-1)).toMatchObject({ outcome: "succeeded", result: { expired: 1, remaining: 0 } });
    expect((await offer(db, lost)).status).toBe("EXPIRED");
    expect((await offer(db, future)).status).toBe("SENT");
    expect((await offer(db, draft)).status).toBe("DRAFT");
    expect((await offer(db, accepted)).status).toBe("ACCEPTED");
  });

  it("finds overdue offers through the partial index, not a scan of the table", async () => {
    // A realistic mix: many SENT offers not yet due (and the 10,000 withdrawn ones from above).
    const c = await createCompany(db);
    await db.pool.query(
      `with w as (insert into app_public.workers (name) select 'later ' || g from generate_series(1, 5000) g returning id),
            a as (insert into app_public.job_applications (job_id, worker_id) select $1, w.id from w returning id)
       insert into app_public.offers (application_id, start_date, end_date, status, expires_at)
       select a.id, '2030-01-01', '2030-01-31', 'SENT', now() + interval '3 days' from a`,
      [c.jobId],
    );
    await db.pool.query("analyze app_public.offers");
    const { rows } = await db.pool.query(
      "explain select id from app_public.offers where status = 'SENT' and expires_at <= now() order by expires_at limit 1000",
    );
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    expect(plan).toContain("offers_sent_expires_at_idx");
    expect(plan).not.toMatch(/Seq Scan on offers/);
  });
});
