import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineTask, resolveTask, TASK_DEFAULTS } from "../../src/worker/task.ts";
import { loadTasks, syncCatalogue, TaskLoadError } from "../../src/worker/catalogue.ts";
import { loadCrontab } from "../../src/worker/crontab.ts";
import { createTestDb, listJobs, type TestDb } from "../helpers/db.ts";

let db: TestDb;
let tmp: string;
beforeAll(async () => {
  db = await createTestDb();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-defaults-"));
});
afterAll(async () => {
  await db?.drop();
  await fs.rm(tmp, { recursive: true, force: true });
});

const declared = resolveTask("t_declared", defineTask({
  description: "declares its defaults",
  payload: z.object({}),
  priority: 7,
  maxAttempts: 3,
  timeLimitMs: 1234,
  async run() {},
}));
const plain = resolveTask("t_plain", defineTask({ description: "uses the project defaults", payload: z.object({}), async run() {} }));

describe("per-task defaults", () => {
  beforeAll(async () => {
    await syncCatalogue(db.pool, [declared, plain]);
  });

  it("are written to the catalogue; tasks another version declared are kept for a rolling deploy", async () => {
    const { rows } = await db.pool.query(
      "select identifier, priority, max_attempts, time_limit_ms from app_private.tasks where identifier like 't\\_%' order by identifier",
    );
    expect(rows).toEqual([
      { identifier: "t_declared", priority: 7, max_attempts: 3, time_limit_ms: 1234 },
      { identifier: "t_plain", priority: TASK_DEFAULTS.priority, max_attempts: TASK_DEFAULTS.maxAttempts, time_limit_ms: TASK_DEFAULTS.timeLimitMs },
    ]);
    // The template's catalogue came from tasks/ (this file's sync did not include them): still there.
    const { rows: kept } = await db.pool.query("select 1 from app_private.tasks where identifier = 'job_runs__prune'");
    expect(kept).toHaveLength(1);
  });

  it("are applied when SQL enqueues through app_private.add_job, unless the caller overrides them", async () => {
    const { rows } = await db.pool.query<{ a: string; b: string }>(
      "select app_private.add_job('t_declared')::text as a, app_private.add_job('t_declared', priority := 1, max_attempts := 9)::text as b",
    );
    const jobs = await listJobs(db);
    expect(jobs.find((j) => j.id === rows[0]!.a)).toMatchObject({ priority: 7, max_attempts: 3 });
    expect(jobs.find((j) => j.id === rows[0]!.b)).toMatchObject({ priority: 1, max_attempts: 9 });
  });

  it("are applied per spec when a trigger enqueues a batch with app_private.add_jobs", async () => {
    const { rows } = await db.pool.query<{ id: string }>(
      `select j::text as id from app_private.add_jobs(array[
         row('t_declared', '{}'::json, null, null, null, 'k:1', null, null)::graphile_worker.job_spec,
         row('t_plain', '{}'::json, null, null, null, 'k:2', null, null)::graphile_worker.job_spec]) j`,
    );
    expect(rows).toHaveLength(2);
    const jobs = (await listJobs(db)).filter((j) => j.key === "k:1" || j.key === "k:2");
    expect(jobs.map((j) => [j.key, j.priority, j.max_attempts])).toEqual([
      ["k:1", 7, 3],
      ["k:2", TASK_DEFAULTS.priority, TASK_DEFAULTS.maxAttempts],
    ]);
  });

  it("refuse an unknown task with error code TASKU and enqueue nothing", async () => {
    const before = (await listJobs(db)).length;
    await expect(db.pool.query("select app_private.add_job('no_such_task')")).rejects.toMatchObject({ code: "TASKU" });
    expect((await listJobs(db)).length).toBe(before);
  });

  it("are filled into crontab entries that do not set them", async () => {
    const file = path.join(tmp, "crontab");
    await fs.writeFile(file, "0 * * * * t_declared ?id=a\n30 * * * * t_declared ?id=b&priority=2&max=5\n");
    const items = await loadCrontab([declared, plain], file);
    expect(items.map((i) => [i.identifier, i.options.priority, i.options.maxAttempts])).toEqual([
      ["a", 7, 3],
      ["b", 2, 5],
    ]);
  });

  it("a crontab entry for a task that does not exist fails start-up, naming it", async () => {
    const file = path.join(tmp, "crontab-bad");
    await fs.writeFile(file, "0 * * * * t_missing ?id=x\n");
    await expect(loadCrontab([declared], file)).rejects.toThrow(/unknown task t_missing/);
  });
});

describe("loading tasks/", () => {
  it("loads every task in the project with its declared defaults, and the crontab parses against them", async () => {
    const tasks = await loadTasks();
    expect(tasks.map((t) => t.identifier)).toContain("job_runs__prune");
    const items = await loadCrontab(tasks);
    expect(items.length).toBeGreaterThan(0);
  });

  it("a task file that fails to load stops loading with the file named", async () => {
    const dir = path.join(tmp, "tasks");
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, "broken__task.ts"), "import './does-not-exist.ts';\nexport default 1;\n");
    await expect(loadTasks(dir)).rejects.toThrow(TaskLoadError);
    await expect(loadTasks(dir)).rejects.toThrow(/broken__task\.ts failed to load/);
  });

  it("a task file without a defineTask default export is refused", async () => {
    const dir = path.join(tmp, "tasks2");
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, "plain__fn.ts"), "export default async function () {}\n");
    await expect(loadTasks(dir)).rejects.toThrow(/must `export default defineTask/);
  });
});

describe("enqueueing from TypeScript", () => {
  it("a task's follow-up job gets the follow-up task's declared defaults", async () => {
    const { drainJobs, jobRuns } = await import("../helpers/db.ts");
    const chaining = resolveTask("t_chaining", defineTask({
      description: "enqueues a follow-up",
      payload: z.object({}),
      async run(_p, { enqueue }) {
        const id = await enqueue("t_declared", {}, { jobKey: "followup:1" });
        return { enqueued: id };
      },
    }));
    await syncCatalogue(db.pool, [declared, plain, chaining]);
    await db.pool.query("select app_private.add_job('t_chaining')");
    await drainJobs(db, [chaining]);
    const [run] = await jobRuns(db, "t_chaining");
    expect(run?.outcome).toBe("succeeded");
    const followup = (await listJobs(db)).find((j) => j.key === "followup:1");
    expect(followup).toMatchObject({ task_identifier: "t_declared", priority: 7, max_attempts: 3 });
    expect((run!.result as { enqueued: string }).enqueued).toBe(followup!.id);
  });
});
