// The accounts sweeps delete exactly what is eligible, in batches, through an index.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { createTestDb, createUser, drainJobs, jobRuns, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let userId: string;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  userId = (await createUser(db)).id;
});
afterAll(async () => {
  await db?.drop();
});

async function runSweep(task: string, batchSize: number) {
  await db.pool.query("select app_private.add_job($1, $2::json)", [task, JSON.stringify({ batchSize })]);
  await drainJobs(db, tasks);
  return (await jobRuns(db, task)).at(-1)!;
}

async function ids(sql: string) {
  return (await db.pool.query<{ k: string }>(sql)).rows.map((r) => r.k).sort();
}

async function planOf(sql: string) {
  const { rows } = await db.pool.query(`explain (format json) ${sql}`);
  return JSON.stringify(rows[0]["QUERY PLAN"]);
}

describe("accounts sweeps", () => {
  it("magic_tokens__sweep deletes expired tokens and tokens used over 24 hours ago, nothing else", async () => {
    const add = (label: string, expires: string, used: string | null) =>
      db.pool.query(
        `insert into app_private.magic_tokens (user_id, token_hash, created_at, expires_at, used_at)
         values ($1, sha256(convert_to($2, 'UTF8')), now() - interval '2 days', now() + $3::interval, now() + $4::interval)`,
        [userId, label, expires, used],
      );
    await add("expired-1", "-1 minute", null);
    await add("expired-2", "-3 hours", null);
    await add("used-long-ago-1", "-2 days", "-25 hours");
    await add("used-long-ago-2", "+10 minutes", "-30 hours");
    await add("used-recently", "-1 hour", "-1 hour");
    await add("fresh", "+10 minutes", null);
    // Eligible: the two expired ones, both used over 24 hours ago, and used-recently (it expired an
    // hour ago: expiry alone makes a token eligible). Only "fresh" stays.
    const run = await runSweep("magic_tokens__sweep", 2);
    expect(run).toMatchObject({ outcome: "succeeded", result: { deleted: 5, remaining: 0 } });
    expect(await ids("select token_hash::text as k from app_private.magic_tokens")).toEqual(
      await ids("select sha256(convert_to('fresh', 'UTF8'))::text as k"),
    );
    expect((await runSweep("magic_tokens__sweep", 2)).result).toEqual({ deleted: 0, remaining: 0 });
  });

  it("sessions__sweep deletes expired sessions only, and reports what a full batch left", async () => {
    await db.pool.query("delete from app_private.sessions");
    for (const lifetime of ["-1 day", "-1 minute", "-1 second", "1 day", "30 days"]) {
      await db.pool.query("select app_private.create_session($1, $2::interval)", [userId, lifetime]);
    }
    const { rows } = await db.pool.query("select deleted, remaining::int from app_private.sweep_sessions(2)");
    expect(rows[0]).toEqual({ deleted: 2, remaining: 1 });
    const run = await runSweep("sessions__sweep", 2);
    expect(run).toMatchObject({ outcome: "succeeded", result: { deleted: 1, remaining: 0 } });
    const { rows: left } = await db.pool.query("select count(*)::int as n, bool_and(expires_at > now()) as live from app_private.sessions");
    expect(left[0]).toEqual({ n: 2, live: true });
    expect((await runSweep("sessions__sweep", 2)).result).toEqual({ deleted: 0, remaining: 0 });
  });

  it("rate_limits__sweep deletes ended windows only", async () => {
    await db.pool.query(
      `insert into app_private.rate_limits (key, count, expires_at) values
       ('a', 1, now() - interval '1 hour'), ('b', 5, now() - interval '1 second'), ('c', 2, now() + interval '10 minutes')`,
    );
    expect((await runSweep("rate_limits__sweep", 1)).result).toEqual({ deleted: 2, remaining: 0 });
    expect(await ids("select key as k from app_private.rate_limits")).toEqual(["c"]);
    expect((await runSweep("rate_limits__sweep", 1)).result).toEqual({ deleted: 0, remaining: 0 });
  });

  it("each sweep finds its rows through an index, not a sequential scan of a large table", async () => {
    await db.pool.query(
      `insert into app_private.sessions (user_id, token_hash, expires_at)
       select $1, sha256(convert_to(g::text, 'UTF8')), now() + interval '30 days' from generate_series(1, 50000) g`,
      [userId],
    );
    await db.pool.query(
      `insert into app_private.magic_tokens (user_id, token_hash, expires_at)
       select $1, sha256(convert_to('t' || g, 'UTF8')), now() + interval '15 minutes' from generate_series(1, 50000) g`,
      [userId],
    );
    await db.pool.query(
      `insert into app_private.rate_limits (key, count, expires_at)
       select 'k' || g, 1, now() + interval '15 minutes' from generate_series(1, 50000) g`,
    );
    await db.pool.query("analyze app_private.sessions, app_private.magic_tokens, app_private.rate_limits");
    const plans = [
      await planOf("select e.id from app_private.sessions e where e.expires_at < now() limit 1000"),
      await planOf("select t.id from app_private.magic_tokens t where t.expires_at < now() limit 1000"),
      await planOf("select t.id from app_private.magic_tokens t where t.used_at < now() - interval '24 hours' limit 1000"),
      await planOf("select e.key from app_private.rate_limits e where e.expires_at < now() limit 1000"),
    ];
    for (const plan of plans) {
      expect(plan).not.toContain("Seq Scan");
      expect(plan).toMatch(/Index (Only )?Scan|Bitmap Index Scan/);
    }
  });
});
