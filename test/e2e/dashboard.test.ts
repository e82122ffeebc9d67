// The operations dashboard end to end, in headless Chromium against the real system: the API
// (serving the built app, GraphQL and the jobEvents websocket) and a worker running the real tasks
// and a crontab with an every-minute entry, on a fresh database; sign-in through the emailed link
// caught by a loopback SMTP server. A non-admin is refused; an admin sees a failed email job,
// retries it and watches it succeed without reloading; pauses a schedule and sees its next tick
// skipped; finds both actions in the audit; and keeps getting live updates after the API loses
// its LISTEN connection. Screenshots of the views go to test-results/screenshots/.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { readSchedules } from "../../src/worker/crontab.ts";
import { startWorker, type WorkerHandle } from "../../src/worker/runner.ts";
import { createTestDb, createUser, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { graphql } from "../helpers/graphql.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";
import { ensureDashboardBuilt, launchChromium, screenshot } from "./browser.ts";

const EVERY_MINUTE = "e2e_every_minute";
const ADMIN = "ops@example.com";
const FLAKY = "flaky@example.com";

let db: TestDb;
let smtp: SmtpSink;
let api: ApiHandle;
let worker: WorkerHandle;
let browser: Browser;
let admin: BrowserContext;
let page: Page;
let tmp: string;
const pageErrors: string[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | null | undefined> | T | null | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await check();
    if (found !== null && found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-e2e-"));
  const [, chromium] = await Promise.all([ensureDashboardBuilt(), launchChromium()]);
  browser = chromium;
  db = await createTestDb();
  // Messages are held 1.5 s before the SMTP server says "250 OK": long enough that a retried
  // job is still running when the page has refetched after its retry (its success can then only
  // reach the page live), short enough for sign-in links.
  smtp = await startSmtpSink({ holdMs: 1500 });
  const tasks = await loadTasks();
  // The real crontab plus an entry that ticks every minute, recorded as start-up records them.
  const crontab = path.join(tmp, "crontab");
  await fs.writeFile(crontab, `${await fs.readFile(path.resolve(import.meta.dirname, "../../crontab"), "utf8")}\n* * * * * job_wakeups__sweep ?id=${EVERY_MINUTE}\n`);
  await db.pool.query("select app_private.sync_schedules($1::jsonb)", [JSON.stringify(await readSchedules(crontab))]);
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, tasks, health: { workerRunning: () => worker?.isRunning() ?? null } });
  worker = await startWorker({
    ownerUrl: db.ownerUrl,
    config: testConfig(db, { SMTP_URL: smtp.url, APP_URL: api.url, WORKER_CONCURRENCY: "4" }),
    tasks,
    log: testLog,
    crontabFile: crontab,
  });
  await createUser(db, { email: ADMIN, isAdmin: true });
  admin = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  page = await admin.newPage();
  page.on("pageerror", (err) => pageErrors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") pageErrors.push(`console: ${msg.text()}`);
  });
});

afterAll(async () => {
  await browser?.close();
  await worker?.stop();
  await api?.stop();
  await smtp?.close();
  await db?.drop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

/** Signs in the way a person does: asks for a link, opens the one that arrived by email. */
async function signIn(p: Page, email: string, shot?: string): Promise<string> {
  await p.goto(`${api.url}/dashboard`);
  await p.getByLabel("Email").fill(email);
  await p.getByRole("button", { name: "Email me a sign-in link" }).click();
  await p.getByRole("heading", { name: "Check your email" }).waitFor();
  if (shot) await screenshot(p, shot);
  const mail = await until(`the sign-in email to ${email}`, 15_000, () => smtp.received.find((m) => m.to === email && m.text.includes("/login?token=")));
  const link = new RegExp(`${api.url.replace(/[.]/g, "\\.")}/login\\?token=[A-Za-z0-9_-]+`).exec(mail.text)?.[0];
  expect(link).toBeDefined();
  await p.goto(link!);
  // The token leaves the address bar (and the history) at once.
  await p.waitForURL(`${api.url}/dashboard`);
  expect(p.url()).not.toContain("token");
  return link!;
}

/** Queues an email to FLAKY with two attempts (in the same transaction, before a worker can take it); its job id. */
async function queueFlakyEmail(): Promise<string> {
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    const { rows: [delivery] } = await client.query<{ id: string }>(
      `select app_private.queue_email('e2e:flaky', 'notification', $1, '{"title": "Disk almost full", "body": "The volume is at 91%."}') as id`,
      [FLAKY],
    );
    const { rows: [job] } = await client.query<{ id: string }>(
      "select id::text from graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), max_attempts := 2)",
      [`email_deliveries:${delivery!.id}:send`],
    );
    await client.query("commit");
    return job!.id;
  } catch (err) {
    await client.query("rollback");
    throw err;
  } finally {
    client.release();
  }
}

describe("the operations dashboard", () => {
  it("refuses a non-admin who signs in through the emailed link; the API gives them nothing either", async () => {
    await createUser(db, { email: "dev@example.com" });
    const context = await browser.newContext({ viewport: { width: 1024, height: 600 } });
    try {
      const p = await context.newPage();
      const link = await signIn(p, "dev@example.com", "sign-in");
      await p.getByRole("heading", { name: "Admins only" }).waitFor();
      expect(await p.getByRole("main").textContent()).toContain("You are signed in as dev@example.com, which is not an admin account.");
      expect(await p.getByRole("navigation").count()).toBe(0);
      await screenshot(p, "refused");

      const token = await p.evaluate(() => sessionStorage.getItem("hourglass.session"));
      expect(token).toBeTruthy();
      const res = await graphql(api, token, "{ allQueuedJobs { totalCount } allSchedules { totalCount } allAdminActions { totalCount } }");
      expect(res.data).toEqual({ allQueuedJobs: { totalCount: 0 }, allSchedules: { totalCount: 0 }, allAdminActions: { totalCount: 0 } });
      expect((await graphql(api, token, "{ jobOverview { queued } }")).errors?.[0]?.extensions?.code).toBe("ADMIN");

      await p.getByRole("button", { name: "Sign out" }).click();
      await p.getByRole("button", { name: "Email me a sign-in link" }).waitFor();
      expect(await p.evaluate(() => sessionStorage.getItem("hourglass.session"))).toBeNull();

      // A link works once; the API's refusal is shown as it came, code and message.
      await p.goto(link);
      const refusal = await p.getByRole("alert").textContent();
      expect(refusal).toContain("LOGIN");
      expect(refusal).toContain("This sign-in link is invalid, used or expired");
    } finally {
      await context.close();
    }
  });

  it("shows an admin the overview: totals, the queue by task, the workers and the activity charts", async () => {
    await signIn(page, ADMIN);
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.getByRole("status").filter({ hasText: /^live$/ }).waitFor();
    const workers = page.getByRole("table").filter({ has: page.getByRole("columnheader", { name: "Last heartbeat" }) });
    await workers.getByRole("row").nth(1).waitFor();
    expect(await workers.getByRole("row").count()).toBe(2);
    expect(await page.getByRole("img", { name: /^Runs per minute, last hour: \d+ runs/ }).count()).toBe(1);
    expect(await page.getByRole("img", { name: /^Runs per hour, last day: \d+ runs/ }).count()).toBe(1);
    await page.getByRole("rowheader", { name: "send_email" }).waitFor();
  });

  it("shows a failed job with its attempts, retries it and shows it succeed live, without reloading", { timeout: 60_000 }, async () => {
    // An email with two attempts while its SMTP relay answers "421 try later": it fails for good.
    let relayDown = true;
    smtp.policy = (rcpt) => (rcpt === FLAKY && relayDown ? 421 : null);
    await page.getByRole("link", { name: "Jobs" }).click();
    await page.getByRole("heading", { name: "Jobs" }).waitFor();
    await page.getByLabel("State").selectOption("failed");
    await page.waitForURL(/state=failed/);
    // The page is live from here on: the job must show up, fail and succeed without a reload.
    await page.evaluate(() => ((globalThis as unknown as { e2eMarker: boolean }).e2eMarker = true));

    const jobId = await queueFlakyEmail();

    const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: `Job ${jobId}: attempts and actions` }) });
    await row.waitFor({ timeout: 20_000 });
    expect(await row.textContent()).toContain("2 of 2");
    expect(await row.textContent()).toMatch(/421/);
    await row.getByRole("link", { name: `Job ${jobId}: attempts and actions` }).click();

    const panel = page.getByRole("region", { name: new RegExp(`^Job ${jobId}`) });
    const attempts = panel.getByRole("table", { name: `Attempts of job ${jobId}` });
    await attempts.getByRole("row").nth(2).waitFor();
    const outcomes = async () => (await attempts.locator("tbody tr td:nth-child(2)").allTextContents()).map((t) => t.trim());
    expect(await outcomes()).toEqual(["failed retrying", "failed permanently"]);
    expect(await attempts.textContent()).toMatch(/421/);
    await screenshot(page, "jobs");

    relayDown = false;
    await panel.getByLabel(`Reason for job ${jobId}`).fill("the relay is fixed");
    await panel.getByRole("button", { name: "Retry now" }).click();
    await attempts.getByText("succeeded", { exact: true }).waitFor({ timeout: 15_000 });
    expect(await outcomes()).toEqual(["failed retrying", "failed permanently", "succeeded"]);
    await panel.getByText("Not in the queue: it has finished or was cancelled.").waitFor();
    expect(await page.evaluate(() => (globalThis as unknown as { e2eMarker?: boolean }).e2eMarker)).toBe(true);
    expect(smtp.received.filter((m) => m.to === FLAKY)).toHaveLength(1);
    await screenshot(page, "jobs-retried");
  });

  it("pauses a schedule with a reason and shows its next tick skipped", { timeout: 100_000 }, async () => {
    await page.getByRole("link", { name: "Schedules" }).click();
    const row = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: EVERY_MINUTE }) });
    await row.waitFor();
    await row.getByLabel(`Reason for ${EVERY_MINUTE}`).fill("e2e: mail relay migration");
    await row.getByRole("button", { name: `Pause ${EVERY_MINUTE}` }).click();
    await row.getByText("“e2e: mail relay migration”").waitFor();
    expect(await row.textContent()).toContain(`paused`);
    expect(await row.textContent()).toContain(`by ${ADMIN}`);
    const pausedAt = Date.now();

    // The next minute's tick, taken by the worker, is recorded as skipped; the page shows it live.
    await row.locator(".badge", { hasText: /^skipped$/ }).waitFor({ timeout: 75_000 });
    const { rows } = await db.pool.query<{ started_at: Date }>(
      "select started_at from app_public.job_runs where job_key = $1 and outcome = 'skipped'",
      [`cron:${EVERY_MINUTE}`],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.started_at.getTime()).toBeGreaterThan(pausedAt - 1000);
    await screenshot(page, "schedules");
  });

  it("shows both actions in the audit: who, what, when and why", async () => {
    await page.getByRole("link", { name: "Audit" }).click();
    const table = page.getByRole("table", { name: "2 actions" });
    await table.waitFor();
    const rows = await table.locator("tbody tr").allTextContents();
    expect(rows[0]).toMatch(new RegExp(`${ADMIN}.*pause schedule.*schedule:${EVERY_MINUTE}.*e2e: mail relay migration`));
    expect(rows[1]).toMatch(new RegExp(`${ADMIN}.*retry job.*job:\\d+.*the relay is fixed.*task: send_email`));
    await screenshot(page, "audit");
  });

  it("keeps updating after the API loses its event stream: it subscribes again and re-reads", async () => {
    await page.getByRole("link", { name: "Jobs" }).click();
    await page.getByRole("heading", { name: "History" }).waitFor();
    const live = page.getByRole("status").filter({ hasText: /live/ });
    await live.filter({ hasText: /^live$/ }).waitFor();
    // The API process's LISTEN connection for subscriptions dies (a failover, a DBA's pg_terminate_backend);
    // its other one, for ended sessions, is left alone.
    const { rows } = await db.pool.query<{ ok: boolean }>(
      `select pg_terminate_backend(pid) as ok from pg_stat_activity
       where datname = current_database() and usename = $1 and query ilike 'listen%' and application_name <> 'hourglass-api-sessions'`,
      [db.run.roles.authenticator],
    );
    expect(rows.map((r) => r.ok)).toEqual([true]);
    await live.filter({ hasText: /^not live$/ }).waitFor({ timeout: 5000 });
    await live.filter({ hasText: /^live$/ }).waitFor({ timeout: 10_000 });
    // A job now shows up live. (The indicator turns back to live when the page subscribes again;
    // the API's new LISTEN follows a moment later, so a job is added each second until one shows.)
    const shown = page.getByRole("row").filter({ hasText: "e2e:after-reconnect" }).getByText("succeeded").first();
    await until("a job run after the reconnection to show", 10_000, async () => {
      await db.pool.query("select app_private.add_job('job_wakeups__sweep', job_key := 'e2e:after-reconnect:' || gen_random_uuid())");
      return (await shown.waitFor({ timeout: 1000 }).then(() => true, () => null));
    });
  });

  it("counts the failures in the overview's totals, its queue by task and its per-minute chart", async () => {
    await page.getByRole("link", { name: "Overview" }).click();
    const failures = page.locator(".fact", { has: page.getByText("Failures, last 24 h", { exact: true }) }).locator("dd");
    await until("the overview's failures", 10_000, async () => ((await failures.textContent()) === "2" ? true : null));
    // The table and the charts come from the rollups (jobStats, jobActivity), the total from
    // jobOverview: separate queries, each re-read on its own after the events.
    const sendEmail = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: "send_email" }) });
    const cells = async () => (await sendEmail.getByRole("cell").allTextContents()).slice(0, 5);
    await until("send_email's failures in the table", 10_000, async () => ((await cells()).at(-1) === "2" ? true : null));
    expect(await cells()).toEqual(["0", "0", "0", "0", "2"]);
    const chart = page.getByRole("img", { name: /^Runs per minute, last hour: \d+ runs, 2 failures/ });
    await until("the per-minute chart's failures", 10_000, async () => ((await chart.count()) === 1 ? true : null));
    await screenshot(page, "overview");
    // Nothing on the page failed so far (a CSP violation or a script error would show here).
    expect(pageErrors).toEqual([]);
  });

  it("goes back to sign-in when the session ends elsewhere (expired, or logged out in another tab)", async () => {
    await db.pool.query("delete from app_private.sessions where user_id = (select id from app_public.users where email = $1)", [ADMIN]);
    await page.getByRole("link", { name: "Audit" }).click();
    await page.getByText("Your session has ended. Sign in again.").waitFor();
    await page.getByRole("button", { name: "Email me a sign-in link" }).waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem("hourglass.session"))).toBeNull();
    // The browser logs the 401 itself; nothing else went wrong.
    expect(pageErrors.filter((e) => !e.includes("status of 401 (Unauthorized)"))).toEqual([]);
  });
});
