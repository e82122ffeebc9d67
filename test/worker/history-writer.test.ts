// The history writer when the database does not cooperate: outages, poison records, lost replies.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { createPool } from "../../src/db/pool.ts";
import { uuidv7 } from "../../src/db/uuidv7.ts";
import { HistoryWriter, type RunRecord } from "../../src/worker/history.ts";
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
});
