// Schedules: the crontab's entries are recorded at start-up; an admin pauses one and the next
// tick of it, on any worker, is recorded as skipped instead of run; resuming lets the next tick
// run. Audited, admins only.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { loadCrontab } from "../../src/worker/crontab.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { createTestDb, createUser, drainJobs, jobRuns, refusal, signIn, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let admin: { sessionId: string };
let user: { sessionId: string };
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
  user = await signIn(db, (await createUser(db)).id);
});
afterAll(async () => {
  await db?.drop();
});

const attempt = (sessionId: string, sql: string, params: unknown[]) => refusal(db, sessionId, sql, params);

/** A tick of a crontab entry, as graphile-worker's cron enqueues it (payload marker, key cron:<id>). */
async function tick(id: string, task: string) {
  await db.pool.query("select graphile_worker.add_job($1, json_build_object('_cron', json_build_object('ts', now(), 'backfilled', false)), job_key := $2)", [
    task,
    `cron:${id}`,
  ]);
  await drainJobs(db, tasks.filter((t) => t.identifier === task));
}

describe("schedules", () => {
  it("every crontab entry is recorded with its pattern and task, and its jobs carry the key cron:<id>", async () => {
    const { rows } = await db.pool.query("select id, pattern, task_identifier from app_public.schedules order by id");
    const items = await loadCrontab(tasks);
    expect(rows.map((r) => r.id).sort()).toEqual(items.map((i) => i.identifier).sort());
    expect(rows.find((r) => r.id === "offers_expire_overdue")).toEqual({ id: "offers_expire_overdue", pattern: "0 * * * *", task_identifier: "offers__expire_overdue" });
    expect(rows.find((r) => r.id === "exchanges_purge_due")).toMatchObject({ pattern: "0 2 * * *" });
    for (const item of items) expect(item.options.jobKey).toBe(`cron:${item.identifier}`);
  });

  it("a paused schedule's tick is skipped and recorded; after resuming, the next tick runs", async () => {
    expect(await attempt(admin.sessionId, "select app_public.pause_schedule('rate_limits_sweep', 'investigating load')", [])).toBeNull();
    await tick("rate_limits_sweep", "rate_limits__sweep");
    expect((await jobRuns(db, "rate_limits__sweep")).at(-1)).toMatchObject({
      outcome: "skipped",
      result: { skipped: "schedule rate_limits_sweep is paused: investigating load" },
    });
    expect(await attempt(admin.sessionId, "select app_public.resume_schedule('rate_limits_sweep')", [])).toBeNull();
    await tick("rate_limits_sweep", "rate_limits__sweep");
    expect((await jobRuns(db, "rate_limits__sweep")).at(-1)).toMatchObject({ outcome: "succeeded", result: { deleted: 0, remaining: 0 } });
    const { rows } = await db.pool.query("select action, target, reason from app_public.admin_actions order by id");
    expect(rows).toEqual([
      { action: "pause_schedule", target: "schedule:rate_limits_sweep", reason: "investigating load" },
      { action: "resume_schedule", target: "schedule:rate_limits_sweep", reason: null },
    ]);
  });

  it("resuming with replay runs each skipped tick once, with its own tick time; without replay nothing is queued", async () => {
    const queued = async () => (await db.pool.query("select count(*)::int as n from graphile_worker.jobs")).rows[0].n as number;
    expect(await attempt(admin.sessionId, "select app_public.pause_schedule('sessions_sweep', 'replay test')", [])).toBeNull();
    await tick("sessions_sweep", "sessions__sweep");
    await tick("sessions_sweep", "sessions__sweep");
    const skipped = (await jobRuns(db, "sessions__sweep")).filter((r) => r.outcome === "skipped");
    expect(skipped).toHaveLength(2);
    const skippedTicks = skipped.map((r) => (r.payload as { _cron: { ts: string } })._cron.ts).sort();
    expect(new Set(skippedTicks).size).toBe(2);

    expect(await attempt(admin.sessionId, "select app_public.resume_schedule('sessions_sweep', 'catch up', replay => true)", [])).toBeNull();
    expect(await queued()).toBe(2);
    await drainJobs(db, tasks.filter((t) => t.identifier === "sessions__sweep"));
    const replayed = (await jobRuns(db, "sessions__sweep")).slice(-2);
    expect(replayed.map((r) => r.outcome)).toEqual(["succeeded", "succeeded"]);
    expect(replayed.map((r) => (r.payload as { _cron: { ts: string; backfilled: boolean } })._cron).sort((a, b) => a.ts.localeCompare(b.ts)))
      .toEqual(skippedTicks.map((ts) => ({ ts, backfilled: true })));
    const { rows: audit } = await db.pool.query("select details from app_public.admin_actions where action = 'resume_schedule' order by id desc limit 1");
    expect(audit).toEqual([{ details: { replayed: 2 } }]);

    // Paused and resumed again without replay: the skipped tick stays skipped.
    expect(await attempt(admin.sessionId, "select app_public.pause_schedule('sessions_sweep')", [])).toBeNull();
    await tick("sessions_sweep", "sessions__sweep");
    expect(await attempt(admin.sessionId, "select app_public.resume_schedule('sessions_sweep')", [])).toBeNull();
    expect(await queued()).toBe(0);
  });

  it("only admins pause or resume, and only entries that exist", async () => {
    expect(await attempt(user.sessionId, "select app_public.pause_schedule('rate_limits_sweep')", [])).toBe("ADMIN");
    expect(await attempt("", "select app_public.resume_schedule('rate_limits_sweep')", [])).toBe("ADMIN");
    expect(await attempt(admin.sessionId, "select app_public.pause_schedule('no_such_entry')", [])).toBe("SCNFD");
    const { rows } = await db.pool.query("select paused_at from app_public.schedules where id = 'rate_limits_sweep'");
    expect(rows).toEqual([{ paused_at: null }]);
  });
});
