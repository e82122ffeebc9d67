// The history writer when the database does not cooperate: outages, poison records, lost replies.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { createPool } from "../../src/db/pool.ts";
import { uuidv7 } from "../../src/db/uuidv7.ts";
import { freshTotals, HistoryWriter, type RunRecord } from "../../src/worker/history.ts";
import { DURATION_BUCKETS_MS, LATENESS_BUCKETS_MS } from "../../src/metrics/buckets.ts";
import { createTestDb, type TestDb } from "../helpers/db.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

const logged: string[] = [];
const log = createLogger({ level: "warn", format: "json", write: (line) => logged.push(line) });
const writers: { pool: import("pg").Pool }[] = [];
afterEach(async () => {
  for (const w of writers.splice(0)) await w.pool.end();
  await db.pool.query("alter table if exists app_public.job_runs_away rename to job_runs");
});

function writer(flushDelayMs = 10) {
  const pool = createPool(db.ownerUrl, { max: 1, name: "test-writer" }, log);
  writers.push({ pool });
  return new HistoryWriter(pool, { flushDelayMs, log });
}

function record(overrides: Partial<RunRecord> = {}): RunRecord {
  return {
    id: uuidv7(),
    jobId: "1",
    task: "t",
    queueName: null,
    jobKey: null,
    attempt: 1,
    maxAttempts: 1,
    payload: { n: 1 },
    workerId: "test",
    runAt: Date.now(),
    startedAt: Date.now(),
    durationMs: null,
    outcome: "running",
    error: null,
    result: null,
    ...overrides,
  };
}

async function outcomeOf(id: string): Promise<string | undefined> {
  const { rows } = await db.pool.query("select outcome from app_public.job_runs where id = $1", [id]);
  return rows[0]?.outcome;
}

describe("job history writer", () => {
  it("keeps records through a failed write and writes them once the table is back", async () => {
    const w = writer(60_000); // no timer: this test drives the flushes
    await db.pool.query("alter table app_public.job_runs rename to job_runs_away");
    const r = record();
    w.start(r);
    w.finish(r.id, "succeeded", null, { ok: true });
    await w.flush();
    expect(logged.some((l) => l.includes("writing job history failed; will retry"))).toBe(true);
    await db.pool.query("alter table app_public.job_runs_away rename to job_runs");
    await w.flush();
    expect(await outcomeOf(r.id)).toBe("succeeded");
    await w.close();
  });

  it("close() gives up after a few attempts instead of hanging when nothing can be written", async () => {
    const w = writer();
    await db.pool.query("alter table app_public.job_runs rename to job_runs_away");
    const r = record();
    w.start(r);
    w.finish(r.id, "succeeded", null, null);
    await w.close();
    expect(logged.some((l) => l.includes("could not be written before shutdown") && l.includes('"lost":1'))).toBe(true);
  });

  it("drops only the record that can never be written; the rest of its batch lands", async () => {
    const w = writer(60_000);
    const good = record();
    const bad = record({ attempt: "not a number" as unknown as number });
    w.start(good);
    w.start(bad);
    w.finish(good.id, "succeeded", null, null);
    w.finish(bad.id, "succeeded", null, null);
    await w.flush();
    expect(await outcomeOf(good.id)).toBe("succeeded");
    expect(await outcomeOf(bad.id)).toBeUndefined();
    expect(logged.some((l) => l.includes("dropped a job history record that cannot be written"))).toBe(true);
    await w.close();
  });

  it("completes a run whose first write committed but whose reply was lost (the row is already there)", async () => {
    const w = writer(60_000);
    const r = record();
    // As if an earlier write of this run's start had committed without the writer learning of it.
    await db.pool.query(
      `insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, outcome)
       values ($1, 1, 't', 1, 1, 'test', now(), 'running')`,
      [r.id],
    );
    w.start(r);
    w.finish(r.id, "failed_permanently", "boom", null);
    await w.flush(); // the plain insert meets the existing row
    await w.flush(); // the retry goes through the upsert
    expect(await outcomeOf(r.id)).toBe("failed_permanently");
    await w.close();
  });

  it("writes a long run as running first, then completes the same row", async () => {
    const w = writer(60_000);
    const r = record();
    w.start(r);
    await w.flush();
    expect(await outcomeOf(r.id)).toBe("running");
    w.finish(r.id, "succeeded", null, { done: 1 });
    await w.flush();
    const { rows } = await db.pool.query("select count(*)::int as n, max(outcome) as outcome from app_public.job_runs where id = $1", [r.id]);
    expect(rows[0]).toEqual({ n: 1, outcome: "succeeded" });
    await w.close();
  });

  it("flushSoon() writes what waits without the flush delay, also when called during a write", async () => {
    const w = writer(60_000);
    const a = record();
    w.start(a);
    w.finish(a.id, "succeeded", null, null);
    w.flushSoon();
    const deadline = Date.now() + 5000;
    while ((await outcomeOf(a.id)) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await outcomeOf(a.id)).toBe("succeeded");
    // While a write is under way: the next one follows it at once instead of 60 s later.
    const b = record();
    const c = record();
    w.start(b);
    w.finish(b.id, "succeeded", null, null);
    w.flushSoon();
    w.start(c);
    w.finish(c.id, "succeeded", null, null);
    w.flushSoon();
    while ((await outcomeOf(c.id)) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect([await outcomeOf(b.id), await outcomeOf(c.id)]).toEqual(["succeeded", "succeeded"]);
    await w.close();
  });

  it("flushFinished() writes the finished runs now and keeps those still running for a later write", async () => {
    const w = writer(60_000);
    const running = record();
    const done = record();
    w.start(running);
    w.start(done);
    w.finish(done.id, "succeeded", null, null);
    w.flushFinished();
    const deadline = Date.now() + 5000;
    while ((await outcomeOf(done.id)) === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await outcomeOf(done.id)).toBe("succeeded");
    expect(await outcomeOf(running.id)).toBeUndefined();
    w.flushFinished(); // nothing finished: writes nothing
    await new Promise((r) => setTimeout(r, 50));
    expect(await outcomeOf(running.id)).toBeUndefined();
    w.finish(running.id, "failed_retrying", "boom", null);
    await w.flush();
    expect(await outcomeOf(running.id)).toBe("failed_retrying");
    await w.close();
  });

  it("adds to the metrics and the rollups exactly what its rows say, whether inserted or completed", async () => {
    const w = writer(60_000);
    // Runs of a task of their own, ending on both sides of a minute (and hour) boundary, late,
    // on time, early (due later: lateness 0) and without run_at; some first written as running.
    const boundary = Math.floor(Date.now() / 3_600_000) * 3_600_000;
    const outcomes = ["succeeded", "failed_retrying", "skipped", "timed_out"] as const;
    const records: { r: RunRecord; ms: number; outcome: (typeof outcomes)[number] }[] = [];
    for (let i = 0; i < 40; i++) {
      const startedAt = boundary - 20 + i;
      const runAt = [null, startedAt - 7, startedAt - 3000, startedAt + 50][(i >> 2) % 4]!;
      records.push({ r: record({ task: "t_totals", startedAt, runAt }), ms: [0.2, 3, 12, 40, 260][i % 5]!, outcome: outcomes[i % 4]! });
    }
    const completedLater = records.filter((_, i) => i % 3 === 0);
    for (const { r, ms } of records) w.start({ ...r, clock: performance.now() - ms });
    for (const x of completedLater) w.finish(x.r.id, x.outcome, null, null);
    await w.flush(); // the rest are written as running
    for (const x of records) if (!completedLater.includes(x)) w.finish(x.r.id, x.outcome, null, null);
    await w.flush(); // and completed by the upsert
    await w.close();

    const sumArrays = (column: string) => `array(select sum(v)::int from (select unnest(${column}) v, generate_subscripts(${column}, 1) i
      from app_private.job_metrics m2 where m2.task_identifier = m.task_identifier and m2.outcome = m.outcome) u group by i order by i)`;
    const { rows: metrics } = await db.pool.query(`select outcome, sum(runs)::int as runs, round(sum(duration_sum_ms)::numeric, 6) as d_sum,
        ${sumArrays("duration_buckets")} as d, sum(lateness_count)::int as l_count, round(sum(lateness_sum_ms)::numeric, 6) as l_sum,
        ${sumArrays("lateness_buckets")} as l
      from app_private.job_metrics m where task_identifier = 't_totals' group by task_identifier, outcome order by outcome`);
    const counts = (value: string, bounds: readonly number[]) =>
      `array[${bounds.map((b) => `count(*) filter (where ${value} <= ${b})::int`).join(", ")}]`;
    const { rows: expected } = await db.pool.query(`select outcome, count(*)::int as runs, round(sum(duration_ms)::numeric, 6) as d_sum,
        ${counts("duration_ms", DURATION_BUCKETS_MS)} as d, count(l)::int as l_count, round(coalesce(sum(l), 0)::numeric, 6) as l_sum,
        ${counts("l", LATENESS_BUCKETS_MS)} as l
      from (select *, case when run_at is not null then greatest(0, extract(epoch from started_at - run_at) * 1000) end as l from app_public.job_runs where task_identifier = 't_totals') r
      group by outcome order by outcome`);
    expect(expected.map((r) => [r.outcome, r.runs])).toEqual(outcomes.map((o) => [o, 10]).sort());
    expect(metrics).toEqual(expected);

    for (const [table, unit] of [["app_private.job_runs_per_minute", "minute"], ["app_private.job_runs_per_hour", "hour"]] as const) {
      const { rows: rollup } = await db.pool.query(`select bucket, outcome, sum(runs)::int as runs, round(sum(duration_sum_ms)::numeric, 6) as d_sum,
          round(max(duration_max_ms)::numeric, 6) as d_max
        from ${table} where task_identifier = 't_totals' group by 1, 2 order by 1, 2`);
      const { rows: counted } = await db.pool.query(`select date_trunc('${unit}', finished_at, 'UTC') as bucket, outcome, count(*)::int as runs,
          round(sum(duration_ms)::numeric, 6) as d_sum, round(max(duration_ms)::numeric, 6) as d_max
        from app_public.job_runs where task_identifier = 't_totals' group by 1, 2 order by 1, 2`);
      expect(rollup).toEqual(counted);
      expect(new Set(counted.map((r) => r.bucket.getTime())).size).toBe(2); // both sides of the boundary
    }
  });

  it("counts a value on a histogram bound in that bound's bucket", () => {
    const at = Date.now();
    const totals = freshTotals([
      record({ outcome: "succeeded", durationMs: 5, startedAt: at, runAt: at - 10 }),
      record({ outcome: "succeeded", durationMs: 5.001, startedAt: at, runAt: at - 11 }),
      record({ outcome: "running", durationMs: null }),
      record({ outcome: "abandoned", durationMs: 1 }),
    ]);
    expect(totals.metrics).toHaveLength(1);
    const m = totals.metrics[0]!;
    expect(m.runs).toBe(2);
    expect(m.d_buckets.slice(0, 3)).toEqual([0, 1, 2]); // <= 1, <= 5, <= 10
    expect(m.l_buckets.slice(0, 3)).toEqual([0, 1, 2]); // <= 5, <= 10, <= 25
    expect(m.d_buckets.at(-1)).toBe(2);
  });
});
