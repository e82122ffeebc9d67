// The admin job control plane: the queue with states and filters, and retry / cancel /
// reschedule — refused for a running job (and nothing changes), working on failed and queued
// ones, audited, and refused to anyone but an admin.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import { graphql } from "../helpers/graphql.ts";
import { asVisitor, createTestDb, createUser, refusal, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let api: ApiHandle;
let admin: { sessionId: string; token: string };
let user: { sessionId: string; token: string };
beforeAll(async () => {
  db = await createTestDb();
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
  await db.pool.query(
    "insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_block', 'test', 0, 3, 30000)",
  );
  admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
  user = await signIn(db, (await createUser(db)).id);
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
});

async function addJob(key: string, runAt = "now()"): Promise<string> {
  const { rows } = await db.pool.query(`select id::text from graphile_worker.add_job('t_block', '{}', job_key := $1, run_at := ${runAt})`, [key]);
  return rows[0].id;
}
const jobState = async (id: string) =>
  asVisitor(db, admin.sessionId, async (c) => (await c.query("select state, run_at, attempts from app_public.queued_jobs where id = $1", [id])).rows[0]);
const attempt = (sessionId: string, sql: string, params: unknown[]) => refusal(db, sessionId, sql, params);
const audit = async () => (await db.pool.query("select action, target, reason from app_public.admin_actions order by id")).rows;

describe("the queue as admins see it", () => {
  it("shows states and filters by key prefix over GraphQL; others see nothing", async () => {
    const queued = await addJob("offers:42:expire");
    const scheduled = await addJob("offers:42:notify", "now() + interval '1 day'");
    const failed = await addJob("exchanges:7:match");
    await db.pool.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint], 'boom')", [failed]);
    expect((await jobState(queued)).state).toBe("queued");
    expect((await jobState(scheduled)).state).toBe("scheduled");
    expect((await jobState(failed)).state).toBe("failed");

    const q = `{ allQueuedJobs(filter: {key: {startsWith: "offers:42:"}}, orderBy: ROW_ID_ASC) { nodes { rowId key state taskIdentifier } } }`;
    const gql = (token: string) => graphql(api, token, q);
    expect((await gql(admin.token)).data.allQueuedJobs.nodes).toEqual([
      { rowId: queued, key: "offers:42:expire", state: "queued", taskIdentifier: "t_block" },
      { rowId: scheduled, key: "offers:42:notify", state: "scheduled", taskIdentifier: "t_block" },
    ]);
    expect((await gql(user.token)).data.allQueuedJobs.nodes).toEqual([]);
    await db.pool.query("select graphile_worker.complete_jobs(array[$1, $2, $3]::bigint[])", [queued, scheduled, failed]);
  });
});

describe("acting on jobs", () => {
  it("retry, reschedule and cancel work on jobs that are not running, and are audited", async () => {
    const failed = await addJob("retry-me");
    await db.pool.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint], 'boom')", [failed]);
    expect(await attempt(admin.sessionId, "select app_public.retry_job($1, 'fixed the bug')", [failed])).toBeNull();
    expect(await jobState(failed)).toMatchObject({ state: "queued", attempts: 0 });

    const later = await addJob("move-me", "now() + interval '1 hour'");
    const to = new Date(Date.now() + 2 * 86_400_000);
    expect(await attempt(admin.sessionId, "select app_public.reschedule_job($1, $2, 'after the holidays')", [later, to])).toBeNull();
    expect((await jobState(later)).run_at).toEqual(to);

    expect(await attempt(admin.sessionId, "select app_public.cancel_job($1, 'not needed')", [later])).toBeNull();
    expect(await jobState(later)).toBeUndefined();
    expect(await audit()).toEqual([
      { action: "retry_job", target: `job:${failed}`, reason: "fixed the bug" },
      { action: "reschedule_job", target: `job:${later}`, reason: "after the holidays" },
      { action: "cancel_job", target: `job:${later}`, reason: "not needed" },
    ]);
    expect(await attempt(admin.sessionId, "select app_public.cancel_job($1)", [later])).toBe("JBNFD");
    await db.pool.query("select graphile_worker.complete_jobs(array[$1::bigint])", [failed]);
  });

  it("a running job is refused (JBRUN) for every action, and nothing changes", async () => {
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const block = resolveTask("t_block", defineTask({
      description: "waits until the test lets it finish",
      payload: z.object({}),
      async run() {
        started();
        await released;
      },
    }));
    const id = await addJob("busy");
    const worker = await startWorker({ ownerUrl: db.ownerUrl, config: testConfig(db), tasks: [block], log: testLog, crontabFile: null });
    try {
      await running;
      const before = await jobState(id);
      expect(before.state).toBe("running");
      // Counted as running by the overview and the task catalogue (t_block is a task of this test's own).
      await db.pool.query(
        `insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms)
         values ('t_block', 'waits', 0, 25, 60000) on conflict (identifier) do nothing`,
      );
      const counts = await asVisitor(db, admin.sessionId, async (c) => ({
        task: (await c.query("select queued, scheduled, running, failed from app_public.tasks where identifier = 't_block'")).rows,
        overview: (await c.query("select queued, scheduled, running, failed from app_public.job_overview()")).rows,
      }));
      expect(counts).toEqual({
        task: [{ queued: 0, scheduled: 0, running: 1, failed: 0 }],
        overview: [{ queued: 0, scheduled: 0, running: 1, failed: 0 }],
      });
      const auditBefore = await audit();
      expect(await attempt(admin.sessionId, "select app_public.retry_job($1)", [id])).toBe("JBRUN");
      expect(await attempt(admin.sessionId, "select app_public.cancel_job($1)", [id])).toBe("JBRUN");
      expect(await attempt(admin.sessionId, "select app_public.reschedule_job($1, now() + interval '1 day')", [id])).toBe("JBRUN");
      expect(await jobState(id)).toEqual(before);
      expect(await audit()).toEqual(auditBefore);
    } finally {
      release();
      await worker.stop();
    }
    expect(await jobState(id)).toBeUndefined();
  });

  it("non-admins and anonymous requests are refused (ADMIN)", async () => {
    const id = await addJob("not-yours");
    for (const session of [user.sessionId, ""]) {
      for (const sql of ["select app_public.retry_job($1)", "select app_public.cancel_job($1)", "select app_public.reschedule_job($1, now())"]) {
        expect(await attempt(session, sql, [id])).toBe("ADMIN");
      }
    }
    expect((await jobState(id)).state).toBe("queued");
  });
});
