// The rest of the control plane: the task catalogue with queue counts and last success/failure,
// each schedule's next run (as graphile-worker's own matcher would fire it) and last run,
// run-now (even while paused), triggerTask with its payload checked against the task's schema,
// and the overview behind GraphQL and /healthz. Admins only, audited.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { parseCrontab, type ParsedCronItem } from "graphile-worker";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadTasks, syncCatalogue } from "../../src/worker/catalogue.ts";
import { loadCrontab } from "../../src/worker/crontab.ts";
import { defineTask, resolveTask, type ResolvedTask } from "../../src/worker/task.ts";
import { asVisitor, createTestDb, createUser, drainJobs, jobRuns, refusal, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { graphql } from "../helpers/graphql.ts";

let db: TestDb;
let api: ApiHandle;
let tasks: ResolvedTask[];
let admin: { sessionId: string; token: string };
let user: { sessionId: string; token: string };

const tick = resolveTask("t_tick", defineTask({
  description: "records a tick (test)",
  payload: z.object({ label: z.string() }),
  softTimeLimitMs: 1000,
  timeLimitMs: 2000,
  async run({ label }, { cron }) {
    return { label, cron: cron !== null };
  },
}));
const flaky = resolveTask("t_flaky", defineTask({
  description: "fails when asked to (test)",
  payload: z.object({ fail: z.boolean() }),
  maxAttempts: 1,
  async run({ fail }) {
    if (fail) throw new Error("asked to fail");
    return { ok: true };
  },
}));

beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  // Test tasks in the catalogue as start-up would record them, and a crontab entry for one.
  await syncCatalogue(db.pool, [tick, flaky]);
  await db.pool.query(
    `select app_private.sync_schedules('[{"id": "t_every_minute", "pattern": "* * * * *", "task": "t_tick", "options": {}, "payload": {"label": "from crontab"}}]')`,
  );
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null }, tasks: [...tasks, tick, flaky] });
  admin = await signIn(db, (await createUser(db, { isAdmin: true })).id);
  user = await signIn(db, (await createUser(db)).id);
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
});

const attempt = (sessionId: string, sql: string, params: unknown[] = []) => refusal(db, sessionId, sql, params);
const asAdmin = <T>(fn: Parameters<typeof asVisitor<T>>[2]) => asVisitor(db, admin.sessionId, fn);
const audit = async () => (await db.pool.query("select action, target, reason, details from app_public.admin_actions order by id")).rows;
const clearQueue = () => db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs))");

describe("the task catalogue", () => {
  it("lists every task with its declared defaults, soft and hard limits, payload schema and crontab entries", async () => {
    const rows = await asAdmin(async (c) => (await c.query("select * from app_public.tasks order by identifier")).rows);
    expect(rows.map((r) => r.identifier)).toEqual([...tasks.map((t) => t.identifier), "t_flaky", "t_tick"].sort());
    const digest = rows.find((r) => r.identifier === "notifications__send_digest");
    const declared = tasks.find((t) => t.identifier === "notifications__send_digest")!;
    expect(digest).toMatchObject({
      description: declared.description,
      priority: declared.priority,
      max_attempts: declared.maxAttempts,
      time_limit_ms: declared.timeLimitMs,
      soft_time_limit_ms: Math.floor(declared.timeLimitMs * 0.8),
      schedule_ids: ["notifications_digest"],
      queued: 0,
      failed: 0,
    });
    expect(rows.find((r) => r.identifier === "t_tick")).toMatchObject({ soft_time_limit_ms: 1000, time_limit_ms: 2000, schedule_ids: ["t_every_minute"] });
    expect(rows.find((r) => r.identifier === "t_tick")!.payload_schema).toMatchObject({
      type: "object",
      properties: { label: { type: "string" } },
      required: ["label"],
    });
  });

  it("counts each task's jobs by state and shows its last success and last failure", async () => {
    await db.pool.query(`select graphile_worker.add_job('t_flaky', '{"fail": false}');
      select graphile_worker.add_job('t_flaky', '{"fail": true}', max_attempts := 1);
      select graphile_worker.add_job('t_flaky', '{"fail": false}', run_at := now() + interval '1 hour')`);
    let row = await asAdmin(async (c) => (await c.query("select * from app_public.tasks where identifier = 't_flaky'")).rows[0]);
    expect(row).toMatchObject({ queued: 2, scheduled: 1, running: 0, failed: 0, last_succeeded_at: null, last_failed_at: null });
    expect(row.oldest_due_at).toBeInstanceOf(Date);

    await drainJobs(db, [flaky]);
    row = await asAdmin(async (c) => (await c.query("select * from app_public.tasks where identifier = 't_flaky'")).rows[0]);
    expect(row).toMatchObject({ queued: 0, scheduled: 1, failed: 1, last_error: "asked to fail", oldest_due_at: null });
    expect(row.last_succeeded_at).toBeInstanceOf(Date);
    expect(row.last_failed_at).toBeInstanceOf(Date);
    await clearQueue();
  });

  it("shows nothing to anyone but an admin", async () => {
    const seen = await asVisitor(db, user.sessionId, async (c) => (await c.query("select count(*)::int as n from app_public.tasks")).rows[0].n);
    expect(seen).toBe(0);
    const res = await graphql(api, null, "{ allTasks { totalCount } }");
    expect(res.data.allTasks.totalCount).toBe(0);
  });
});

/** graphile-worker's own matcher, probed minute by minute: the first minute after `after` it fires (within `days`). */
function firstMatch(item: { match: ParsedCronItem["match"] }, after: Date, days: number): Date {
  let t = new Date(Math.floor(after.getTime() / 60_000) * 60_000 + 60_000);
  for (let n = 0; n < days * 24 * 60; n++, t = new Date(t.getTime() + 60_000)) {
    if (item.match({ min: t.getUTCMinutes(), hour: t.getUTCHours(), date: t.getUTCDate(), month: t.getUTCMonth() + 1, dow: t.getUTCDay() })) break;
  }
  return t;
}

describe("schedules: next and last run, run now", () => {
  it("computes each crontab entry's next run exactly as graphile-worker's matcher fires it", async () => {
    const items = await loadCrontab(tasks);
    const from = new Date("2026-11-24T12:34:56Z");
    const { rows } = await db.pool.query<{ id: string; next: Date }>(
      "select id, app_hidden.cron_next_run(pattern, $1) as next from app_public.schedules where id <> 't_every_minute'",
      [from],
    );
    expect(rows).toHaveLength(items.length);
    for (const item of items) {
      const t = firstMatch(item, from, 8);
      expect([item.identifier, rows.find((r) => r.id === item.identifier)!.next.toISOString()]).toEqual([item.identifier, t.toISOString()]);
    }
    // Patterns the crontab does not use today: both day fields restricted (either matches), ranges, lists, 7 = Sunday, leap day.
    const next = async (pattern: string, after: string) =>
      ((await db.pool.query("select app_hidden.cron_next_run($1, $2) as t", [pattern, after])).rows[0].t as Date).toISOString();
    expect(await next("0 0 13 * 5", "2026-11-24T00:00:00Z")).toBe("2026-11-27T00:00:00.000Z");
    expect(await next("15,45 9-17 * * 1-5", "2026-11-27T17:50:00Z")).toBe("2026-11-30T09:15:00.000Z");
    expect(await next("0 8 * * 7", "2026-11-24T00:00:00Z")).toBe("2026-11-29T08:00:00.000Z");
    expect(await next("0 0 29 2 *", "2026-11-24T00:00:00Z")).toBe("2028-02-29T00:00:00.000Z");
    // From many points of a day (every hour and minute field value lands before, on and after
    // the current time), against graphile-worker's matcher for the same lines.
    const patterns = ["* * * * *", "*/5 * * * *", "17 * * * *", "15,45 9-17 * * 1-5", "30 */6 * * *", "0 8 * * 1", "59 23 * * *", "0 0 1 * *"];
    const afters = Array.from({ length: 120 }, (_, i) => new Date(Date.UTC(2026, 10, 27, 0, 0, 31) + i * 37 * 60_000));
    const { rows: computed } = await db.pool.query<{ pattern: string; after: Date; next: Date }>(
      "select p as pattern, a as after, app_hidden.cron_next_run(p, a) as next from unnest($1::text[]) p, unnest($2::timestamptz[]) a",
      [patterns, afters],
    );
    const parsed = parseCrontab(patterns.map((p, i) => `${p} t_probe ?id=probe_${i}`).join("\n"));
    for (const [i, pattern] of patterns.entries()) {
      for (const after of afters) {
        const t = firstMatch(parsed[i]!, after, 40);
        const row = computed.find((r) => r.pattern === pattern && r.after.getTime() === after.getTime())!;
        expect([pattern, after.toISOString(), row.next.toISOString()]).toEqual([pattern, after.toISOString(), t.toISOString()]);
      }
    }
    const codeOf = (sql: string) => db.pool.query(sql).then(() => "accepted", (err: { code?: string }) => err.code);
    expect(await codeOf("select app_hidden.cron_next_run('* * *', now())")).toBe("CRONP");
    expect(await codeOf("select app_hidden.cron_values('5/x', 0, 59)")).toBe("CRONP");
    expect(await codeOf("select app_hidden.cron_values('61', 0, 59)")).toBe("CRONP");
  });

  it("answers nextRunAt from the pattern parsed when the entry was recorded; an entry it cannot parse is still recorded", async () => {
    const { rows } = await db.pool.query<{ id: string; stored: Date; parsed: Date; has_spec: boolean }>(
      `select s.id, app_public.schedules_next_run_at(s) as stored, app_hidden.cron_next_run(s.pattern, now()) as parsed, s.cron is not null as has_spec
       from app_public.schedules s`,
    );
    expect(rows.length).toBeGreaterThan(1);
    for (const r of rows) expect([r.id, r.has_spec, r.stored.toISOString()]).toEqual([r.id, true, r.parsed.toISOString()]);
    // The stored parse follows an edited pattern.
    await db.pool.query("update app_public.schedules set pattern = '0 8 * * 1' where id = 't_every_minute'");
    try {
      const { rows: edited } = await db.pool.query("select (s.cron).dows, (s.cron).hours, (s.cron).minutes from app_public.schedules s where id = 't_every_minute'");
      expect(edited).toEqual([{ dows: [1], hours: [8], minutes: [0] }]);
    } finally {
      await db.pool.query("update app_public.schedules set pattern = '* * * * *' where id = 't_every_minute'");
    }
    // A step of 0 is no pattern this parser reads: recorded anyway, and only its own nextRunAt fails, with CRONP.
    await db.pool.query("insert into app_public.schedules (id, pattern, task_identifier) values ('t_unreadable', '*/0 * * * *', 't_probe')");
    try {
      const { rows: odd } = await db.pool.query("select cron is null as unparsed from app_public.schedules where id = 't_unreadable'");
      expect(odd).toEqual([{ unparsed: true }]);
      const code = await db.pool
        .query("select app_public.schedules_next_run_at(s) from app_public.schedules s where id = 't_unreadable'")
        .then(() => "accepted", (err: { code?: string }) => err.code);
      expect(code).toBe("CRONP");
    } finally {
      await db.pool.query("delete from app_public.schedules where id = 't_unreadable'");
    }
  });

  it("runs an entry now with its payload, even while paused, and shows it as the entry's last run; audited", async () => {
    expect(await attempt(admin.sessionId, "select app_public.pause_schedule('t_every_minute', 'maintenance')")).toBeNull();
    const res = await graphql(api, admin.token, `mutation { runSchedule(input: {scheduleId: "t_every_minute", reason: "backfill by hand"}) { result { rowId key state taskIdentifier } } }`);
    expect(res.errors).toBeUndefined();
    const job = res.data.runSchedule.result;
    expect(job).toMatchObject({ key: "cron:t_every_minute", state: "queued", taskIdentifier: "t_tick" });
    await drainJobs(db, [tick]);
    const [run] = await jobRuns(db, "t_tick");
    expect(run).toMatchObject({ job_id: job.rowId, outcome: "succeeded", result: { label: "from crontab", cron: false } });

    const schedule = await graphql(api, admin.token, `{ scheduleByRowId(rowId: "t_every_minute") { pausedAt nextRunAt lastRun { outcome jobId } } }`);
    expect(schedule.errors).toBeUndefined();
    const s = schedule.data.scheduleByRowId;
    expect(s.lastRun).toEqual({ outcome: "succeeded", jobId: job.rowId });
    expect(new Date(s.nextRunAt).getTime() - Date.now()).toBeLessThanOrEqual(60_000);
    expect(new Date(s.nextRunAt).getUTCSeconds()).toBe(0);
    expect(s.pausedAt).not.toBeNull();
    expect((await audit()).at(-1)).toMatchObject({ action: "run_schedule", target: "schedule:t_every_minute", reason: "backfill by hand", details: { job_id: Number(job.rowId) } });
    expect(await attempt(admin.sessionId, "select app_public.resume_schedule('t_every_minute')")).toBeNull();
  });

  it("refuses run-now to non-admins and for entries that do not exist", async () => {
    expect(await attempt(user.sessionId, "select app_public.run_schedule('t_every_minute')")).toBe("ADMIN");
    expect(await attempt(admin.sessionId, "select app_public.run_schedule('nope')")).toBe("SCNFD");
    expect((await db.pool.query("select count(*)::int as n from graphile_worker.jobs")).rows[0].n).toBe(0);
  });
});

describe("triggerTask", () => {
  const trigger = (token: string | null, identifier: string, payload: unknown) =>
    graphql(api, token, `mutation($identifier: String!, $payload: JSON) { triggerTask(input: {identifier: $identifier, payload: $payload, reason: "support ticket 12"}) { result { rowId taskIdentifier state } } }`, { identifier, payload });
  const jobsInQueue = async () => (await db.pool.query("select count(*)::int as n from graphile_worker.jobs")).rows[0].n as number;

  it("runs a task now with a payload that suits its schema; audited without the payload", async () => {
    const before = (await audit()).length;
    const res = await trigger(admin.token, "t_tick", { label: "by hand" });
    expect(res.errors).toBeUndefined();
    expect(res.data.triggerTask.result).toMatchObject({ taskIdentifier: "t_tick", state: "queued" });
    await drainJobs(db, [tick]);
    const run = (await jobRuns(db, "t_tick")).at(-1);
    expect(run).toMatchObject({ job_id: res.data.triggerTask.result.rowId, outcome: "succeeded", result: { label: "by hand" } });
    const entries = (await audit()).slice(before);
    expect(entries).toEqual([{ action: "trigger_task", target: "task:t_tick", reason: "support ticket 12", details: { job_id: Number(run!.job_id) } }]);
  });

  it("refuses an unknown task (TKNFD), a payload the schema rejects (TKPAY) and a non-object payload, enqueuing and auditing nothing", async () => {
    const before = (await audit()).length;
    const unknown = await trigger(admin.token, "no_such_task", {});
    expect(unknown.errors?.[0]?.extensions?.code).toBe("TKNFD");
    const invalid = await trigger(admin.token, "t_tick", { label: 42 });
    expect(invalid.errors?.[0]).toMatchObject({ extensions: { code: "TKPAY" } });
    expect(invalid.errors?.[0]?.message).toMatch(/^Invalid payload for t_tick: label:/);
    expect(invalid.data?.triggerTask ?? null).toBeNull();
    // A real task's schema, too.
    expect((await trigger(admin.token, "send_email", { deliveryId: "x" })).errors?.[0]?.extensions?.code).toBe("TKPAY");
    expect(await attempt(admin.sessionId, "select app_public.trigger_task('t_tick', '[1]')")).toBe("TKPAY");
    expect(await jobsInQueue()).toBe(0);
    expect((await audit()).length).toBe(before);
  });

  it("is refused to non-admins, without telling them what a task's payload needs", async () => {
    expect((await trigger(user.token, "t_tick", { label: "x" })).errors?.[0]?.extensions?.code).toBe("ADMIN");
    // A payload the task's schema rejects: ADMIN as for an unknown task, not TKPAY with the fields.
    for (const token of [user.token, null]) {
      const refused = await trigger(token, "t_tick", { label: 42 });
      expect(refused.errors?.map((e: any) => [e.extensions?.code, e.message])).toEqual([["ADMIN", expect.not.stringMatching(/label|payload/)]]);
    }
    expect((await trigger(user.token, "no_such_task", {})).errors?.[0]?.extensions?.code).toBe("ADMIN");
    expect(await attempt(user.sessionId, "select app_public.trigger_task('t_tick', '{\"label\": \"x\"}')")).toBe("ADMIN");
    expect(await jobsInQueue()).toBe(0);
  });
});

describe("history aggregates", () => {
  it("counts runs by task and outcome with average and maximum duration, and per hour, for admins only", async () => {
    await db.pool.query(`
      insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, finished_at, duration_ms, outcome)
      select gen_random_uuid(), 1000 + g, 't_hist', 1, 1, 'test:1', t, t + interval '1 second', d, o
      from (values (1, '2026-01-05 10:15Z'::timestamptz, 100, 'succeeded'), (2, '2026-01-05 10:45Z', 300, 'succeeded'),
                   (3, '2026-01-05 10:50Z', 50, 'failed_retrying'), (4, '2026-01-05 11:05Z', 200, 'succeeded')) v(g, t, d, o)`);
    const q = `{ allJobRuns(filter: {taskIdentifier: {equalTo: "t_hist"}}) {
      byOutcome: groupedAggregates(groupBy: [TASK_IDENTIFIER, OUTCOME]) { keys distinctCount { rowId } average { durationMs } max { durationMs } }
      byHour: groupedAggregates(groupBy: [STARTED_AT_TRUNCATED_TO_HOUR]) { keys distinctCount { rowId } } } }`;
    const res = await graphql(api, admin.token, q);
    expect(res.errors).toBeUndefined();
    const byOutcome = res.data.allJobRuns.byOutcome.map((g: any) => [g.keys, Number(g.distinctCount.rowId), g.average.durationMs, g.max.durationMs]);
    expect(byOutcome.sort()).toEqual([
      [["t_hist", "failed_retrying"], 1, 50, 50],
      [["t_hist", "succeeded"], 3, 200, 300],
    ]);
    const byHour = res.data.allJobRuns.byHour.map((g: any) => [new Date(g.keys[0]).toISOString(), Number(g.distinctCount.rowId)]);
    expect(byHour.sort()).toEqual([["2026-01-05T10:00:00.000Z", 3], ["2026-01-05T11:00:00.000Z", 1]]);
    expect((await graphql(api, user.token, q)).data.allJobRuns.byOutcome).toEqual([]);
  });
});

describe("history by key prefix", () => {
  it("finds the runs of one record through the key index, for admins only", async () => {
    await db.pool.query(`
      insert into app_public.job_runs (id, job_id, task_identifier, job_key, attempt, max_attempts, worker_id, started_at, finished_at, duration_ms, outcome)
      select gen_random_uuid(), 5000 + g, 't_hist', k, 1, 1, 'test:1', now() - make_interval(mins => g), now(), 1, 'succeeded'
      from (values (1, 'offers:42:expire'), (2, 'offers:42:notify'), (3, 'offers:420:expire'), (4, 'offers:4:expire')) v(g, k)`);
    const res = await graphql(api, admin.token, `{ jobRunsByKeyPrefix(prefix: "offers:42:") { nodes { jobKey } } }`);
    expect(res.errors).toBeUndefined();
    expect(res.data.jobRunsByKeyPrefix.nodes).toEqual([{ jobKey: "offers:42:expire" }, { jobKey: "offers:42:notify" }]);
    expect(await attempt(user.sessionId, "select * from app_public.job_runs_by_key_prefix('offers:42:')")).toBe("ADMIN");
    expect(await attempt(admin.sessionId, "select * from app_public.job_runs_by_key_prefix('')")).toBe("JBKEY");
    const { rows } = await db.pool.query("explain select * from app_public.job_runs where starts_with(job_key, 'offers:42:') order by started_at desc");
    expect(rows.map((r) => r["QUERY PLAN"]).join("\n")).toContain("job_runs_key_started_idx");
  });
});

describe("the overview", () => {
  it("gives queue depth, the oldest due job, failures in 24 hours and workers alive, to admins and on /healthz", async () => {
    const failuresBefore = (await graphql(api, admin.token, "{ jobOverview { failuresLast24H } }")).data.jobOverview.failuresLast24H as number;
    // Failures of every kind within the day (and a success), and one a day and an hour old.
    await db.pool.query(`
      insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, finished_at, duration_ms, outcome)
      select gen_random_uuid(), 9000 + g, 't_overview', 1, 1, 'test:1', now() - a, now() - a, 10, o
      from (values (1, interval '1 hour', 'timed_out'), (2, interval '2 hours', 'abandoned'), (3, interval '3 hours', 'failed_retrying'),
                   (4, interval '4 hours', 'succeeded'), (5, interval '25 hours', 'failed_permanently')) v(g, a, o)`);
    await db.pool.query(`select graphile_worker.add_job('t_tick', '{"label": "a"}', run_at := now() - interval '90 seconds');
      select graphile_worker.add_job('t_tick', '{"label": "b"}');
      select graphile_worker.add_job('t_tick', '{"label": "c"}', run_at := now() + interval '1 day');
      select graphile_worker.add_job('t_flaky', '{"fail": true}', max_attempts := 1)`);
    await drainJobs(db, [flaky]);
    // Alive by its own threshold (the default 30 s here), dead by it, and alive by its own longer one
    // (a worker started with WORKER_DEAD_AFTER_MS=600000, beating every 100 s).
    await db.pool.query(
      `insert into app_public.worker_processes (id, host, pid, label, last_seen_at, dead_after) values
         ('alive', 'h', 1, 'h:1', now(), default), ('silent', 'h', 2, 'h:2', now() - interval '5 minutes', default),
         ('patient', 'h', 3, 'h:3', now() - interval '90 seconds', interval '10 minutes')`,
    );
    // The three inserted and t_flaky's permanent failure; not the success, not the one from yesterday.
    const failures = failuresBefore + 4;

    const res = await graphql(api, admin.token, "{ jobOverview { queued scheduled running failed oldestDueSeconds failuresLast24H workersAlive schedulerHealthy } }");
    expect(res.errors).toBeUndefined();
    const o = res.data.jobOverview;
    expect(o).toMatchObject({ queued: 2, scheduled: 1, running: 0, failed: 1, failuresLast24H: failures, workersAlive: 2, schedulerHealthy: true });
    expect(o.oldestDueSeconds).toBeGreaterThanOrEqual(89);

    const health = await (await fetch(`${api.url}/healthz`)).json();
    expect(health).toMatchObject({ status: "ok", database: "ok", jobs: { queued: 2, scheduled: 1, failed: 1, workersAlive: 2, schedulerHealthy: true, failuresLast24h: failures } });
    expect(JSON.stringify(health)).not.toMatch(/t_tick|t_flaky/);
    // The same count whatever this API process's own WORKER_DEAD_AFTER_MS; a threshold given in
    // GraphQL applies to every worker.
    const given = async (deadAfter: unknown) =>
      (await graphql(api, admin.token, "query($d: IntervalInput) { jobOverview(deadAfter: $d) { workersAlive } }", { d: deadAfter })).data.jobOverview.workersAlive;
    expect(await given({ minutes: 6 })).toBe(3);
    expect(await given({ seconds: 10 })).toBe(1);

    await db.pool.query("delete from app_public.worker_processes");
    const after = (await (await fetch(`${api.url}/healthz`)).json()) as { status: string; jobs: unknown };
    expect(after).toMatchObject({ status: "ok", jobs: { workersAlive: 0, schedulerHealthy: false } });
    await clearQueue();
  });

  it("is refused to non-admins in GraphQL, and clients cannot call the /healthz function", async () => {
    expect((await graphql(api, user.token, "{ jobOverview { queued } }")).errors?.[0]?.extensions?.code).toBe("ADMIN");
    expect(await attempt(user.sessionId, "select app_hidden.job_health()")).toBe("42501");
    expect(await attempt(admin.sessionId, "select app_hidden.job_health()")).toBe("42501");
  });
});
