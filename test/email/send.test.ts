// send_email through the real queue, the real email log and a real SMTP server on loopback.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { claimDelivery, INTERRUPTED, type Query } from "../../src/email/send.ts";
import { createTestDb, drainJobs, jobRuns, listJobs, makeJobsDue, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";

let db: TestDb;
let smtp: SmtpSink;
let tasks: ResolvedTask[];
beforeAll(async () => {
  db = await createTestDb();
  smtp = await startSmtpSink();
  tasks = await loadTasks();
});
afterAll(async () => {
  await smtp?.close();
  await db?.drop();
});
beforeEach(() => {
  smtp.received.length = 0;
  smtp.policy = () => null;
});

const config = () => testConfig(db, { SMTP_URL: smtp.url, EMAIL_FROM: "Hourglass <hourglass@example.com>" });

async function queueEmail(key: string, recipient: string, data: Record<string, unknown> = { title: "Hello", body: "World" }, template = "notification") {
  const { rows } = await db.pool.query<{ id: string | null }>("select app_private.queue_email($1, $2, $3, $4)::text as id", [
    key,
    template,
    recipient,
    JSON.stringify(data),
  ]);
  return rows[0]!.id;
}

/** Runs jobs until the queue is empty, making retries due instead of waiting for their backoff. */
async function runUntilEmpty(maxRounds = 20) {
  for (let i = 0; i < maxRounds && (await listJobs(db)).some((j) => j.attempts < j.max_attempts); i++) {
    await makeJobsDue(db);
    await drainJobs(db, tasks, config());
  }
}

async function deliveries(keyPrefix: string) {
  const { rows } = await db.pool.query<{ key: string; state: string; attempts: number; last_error: string | null }>(
    "select key, state, attempts, last_error from app_private.email_deliveries where key like $1 || '%' order by id",
    [keyPrefix],
  );
  return rows;
}

describe("send_email", () => {
  it("delivers 200 messages exactly once each while the server answers 421 to 30% of first attempts", async () => {
    const refused: string[] = [];
    smtp.policy = (rcpt, attempt) => {
      if (attempt === 1 && Number(/^u(\d+)@/.exec(rcpt)?.[1]) % 10 < 3) {
        refused.push(rcpt);
        return 421;
      }
      return null;
    };
    for (let i = 0; i < 200; i++) await queueEmail(`bulk:${i}`, `u${i}@example.com`, { title: `Hello ${i}`, body: "x" });
    await runUntilEmpty();
    const rows = await deliveries("bulk:");
    expect(rows.filter((r) => r.state === "sent")).toHaveLength(200);
    expect(refused).toHaveLength(60);
    // Every recipient got exactly one message, including the 60 that were first refused.
    expect(smtp.received).toHaveLength(200);
    expect(new Set(smtp.received.map((m) => m.to)).size).toBe(200);
    expect(new Set(smtp.received.map((m) => m.messageId)).size).toBe(200);
    for (const r of refused) expect(smtp.received.filter((m) => m.to === r)).toHaveLength(1);
  });

  it("a temporary refusal puts the delivery back to pending and the job's retry sends it", async () => {
    smtp.policy = (rcpt, attempt) => (rcpt === "later@example.com" && attempt === 1 ? 451 : null);
    const id = await queueEmail("later:1", "later@example.com");
    await drainJobs(db, tasks, config());
    expect((await deliveries("later:"))[0]).toMatchObject({ state: "pending", attempts: 1, last_error: expect.stringMatching(/451/) });
    await runUntilEmpty();
    expect((await deliveries("later:"))[0]).toMatchObject({ state: "sent", attempts: 2 });
    expect(smtp.received.filter((m) => m.to === "later@example.com")).toHaveLength(1);
    const outcomes = (await jobRuns(db, "send_email"))
      .filter((r) => (r.payload as { deliveryId: number }).deliveryId === Number(id))
      .map((r) => r.outcome);
    expect(outcomes).toEqual(["failed_retrying", "succeeded"]);
  });

  it("a 550 is not retried: the delivery fails, the address is suppressed, later emails to it are not sent", async () => {
    smtp.policy = (rcpt) => (rcpt === "gone@example.com" ? 550 : null);
    const id = await queueEmail("bounce:1", "gone@example.com");
    await runUntilEmpty();
    expect(await deliveries("bounce:")).toEqual([expect.objectContaining({ state: "failed", attempts: 1, last_error: expect.stringMatching(/550/) })]);
    expect((await listJobs(db)).filter((j) => j.task_identifier === "send_email")).toEqual([]);
    const run = (await jobRuns(db, "send_email")).find((r) => (r.payload as { deliveryId: number }).deliveryId === Number(id));
    expect(run?.outcome).toBe("failed_permanently");
    const { rows } = await db.pool.query("select address from app_private.email_suppressions");
    expect(rows).toEqual([{ address: "gone@example.com" }]);

    expect(await queueEmail("bounce:2", "Gone@Example.com")).toBeNull();
    await runUntilEmpty();
    expect(smtp.received).toEqual([]);
    expect((await deliveries("bounce:2"))[0]).toMatchObject({ state: "failed", last_error: "address suppressed" });
  });

  it("the same email queued twice, or its job run twice, sends one message", async () => {
    const id = await queueEmail("dup:1", "dup@example.com");
    expect(await queueEmail("dup:1", "dup@example.com")).toBeNull();
    // A duplicate job for the same delivery (e.g. a DBA re-enqueued it by hand).
    await db.pool.query("select graphile_worker.add_job('send_email', json_build_object('deliveryId', $1::bigint))", [id]);
    await runUntilEmpty();
    expect(smtp.received.filter((m) => m.to === "dup@example.com")).toHaveLength(1);
    const runs = (await jobRuns(db, "send_email")).filter((r) => (r.payload as { deliveryId: number }).deliveryId === Number(id));
    expect(runs.map((r) => r.outcome).sort()).toEqual(["skipped", "succeeded"]);
  });

  it("a claim left by a dead attempt of the same job is marked interrupted, not sent; another job's claim is left alone", async () => {
    const id = Number(await queueEmail("crash:1", "crash@example.com"));
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs))");
    const query = ((text: string, values?: unknown[]) => db.pool.query(text, values)) as Query;
    // Attempt 1 of job 77 claims it, then its worker dies before sending.
    expect(await claimDelivery(query, id, { id: "77", attempts: 1 })).toMatchObject({ recipient: "crash@example.com" });
    // Another job (a duplicate enqueued by hand) must not touch a send in progress.
    expect(await claimDelivery(query, id, { id: "78", attempts: 2 })).toEqual({ notClaimed: `delivery ${id} is sending` });
    expect((await deliveries("crash:"))[0]).toMatchObject({ state: "sending" });
    // Attempt 2 of job 77 (released by crash recovery) knows attempt 1 died mid-send.
    expect(await claimDelivery(query, id, { id: "77", attempts: 2 })).toEqual({ notClaimed: `delivery ${id} was ${INTERRUPTED}` });
    expect((await deliveries("crash:"))[0]).toMatchObject({ state: "failed", last_error: INTERRUPTED, attempts: 1 });
    expect(smtp.received.filter((m) => m.to === "crash@example.com")).toHaveLength(0);
  });

  it("a render error fails the job permanently and sends nothing", async () => {
    const missingVar = await queueEmail("render:1", "r1@example.com", { title: "no body" });
    const unknownTemplate = await queueEmail("render:2", "r2@example.com", {}, "no_such_template");
    await runUntilEmpty();
    expect(smtp.received).toEqual([]);
    const rows = await deliveries("render:");
    expect(rows.map((r) => r.state)).toEqual(["failed", "failed"]);
    expect(rows[0]!.last_error).toMatch(/needs a value for \{\{body\}\}/);
    expect(rows[1]!.last_error).toMatch(/Unknown email template no_such_template/);
    const outcomes = (await jobRuns(db, "send_email"))
      .filter((r) => [Number(missingVar), Number(unknownTemplate)].includes((r.payload as { deliveryId: number }).deliveryId))
      .map((r) => r.outcome);
    expect(outcomes).toEqual(["failed_permanently", "failed_permanently"]);
  });

  it("without SMTP_URL each message is written as an .eml file under DATA_DIR/mail, for this OS user's eyes only", async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-mail-"));
    try {
      await queueEmail("file:1", "file@example.com", { title: "On disk", body: "Hello <file>" });
      await drainJobs(db, tasks, testConfig(db, { DATA_DIR: dataDir }));
      const files = await fs.readdir(path.join(dataDir, "mail"));
      expect(files).toHaveLength(1);
      // Sign-in links travel this way: not readable by other users, whatever the umask (022 here).
      expect((await fs.stat(path.join(dataDir, "mail"))).mode & 0o777).toBe(0o700);
      expect((await fs.stat(path.join(dataDir, "mail", files[0]!))).mode & 0o777).toBe(0o600);
      const eml = await fs.readFile(path.join(dataDir, "mail", files[0]!), "utf8");
      expect(eml).toMatch(/^To: file@example.com$/m);
      expect(eml).toMatch(/^Subject: On disk$/m);
      expect(eml).toContain("Hello &lt;file&gt;");
      expect((await deliveries("file:"))[0]!.state).toBe("sent");
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});
