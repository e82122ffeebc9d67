// /metrics: Prometheus text format (parsed here with a Prometheus text-format parser), counters
// and histograms that move when jobs run, the queue, workers, email and webhook outcomes — and a
// scrape that never reads the history or the delivery tables.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import pg from "pg";
import { z } from "zod";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { defineTask, resolveTask, type ResolvedTask } from "../../src/worker/task.ts";
import { asUser, createTestDb, createUser, drainJobs, makeJobsDue, signIn, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";

let db: TestDb;
let api: ApiHandle;
let smtp: SmtpSink;
let tasks: ResolvedTask[];

const ok = resolveTask("t_ok", defineTask({ description: "succeeds (test)", payload: z.object({}), async run() {} }));
const fail = resolveTask("t_fail", defineTask({
  description: "fails (test)",
  payload: z.object({}),
  async run() {
    throw new Error("boom");
  },
}));

beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  smtp = await startSmtpSink();
  await db.pool.query(
    "insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_ok', 'test', 0, 3, 10000), ('t_fail', 'test', 0, 3, 10000)",
  );
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
});
afterAll(async () => {
  await api?.stop();
  await smtp?.close();
  await db?.drop();
});

interface Sample {
  labels?: Record<string, string>;
  value?: string;
}
interface Family {
  name: string;
  type: string;
  metrics: Sample[];
}

/**
 * Scrapes and parses. The parser checks the whole text (it throws on a malformed line) and types
 * each family; but it folds a histogram's labelled series into one, so series values are read
 * from a second parse of the same text with the histogram TYPE lines left out, where each
 * histogram's _bucket, _sum and _count come back as families of their own.
 */
async function scrape(headers: Record<string, string> = {}, base = api): Promise<Family[]> {
  const res = await fetch(`${base.url}/metrics`, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const typed = parsePrometheusTextFormat(text) as Family[];
  const series = parsePrometheusTextFormat(text.replace(/^# TYPE \S+ histogram$/gm, "")) as Family[];
  return [...typed.filter((f) => f.type !== "HISTOGRAM"), ...typed.filter((f) => f.type === "HISTOGRAM").map((f) => ({ ...f, metrics: [] })), ...series.filter((f) => /_(bucket|sum|count)$/.test(f.name))];
}

function sample(families: Family[], name: string, labels: Record<string, string>): Sample | undefined {
  return families.find((f) => f.name === name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
}
const value = (families: Family[], name: string, labels: Record<string, string>) => Number(sample(families, name, labels)?.value ?? 0);

/** A histogram series: cumulative buckets by bound, count and sum. */
function histogram(families: Family[], name: string, labels: Record<string, string>) {
  const bucketSamples = families.find((f) => f.name === `${name}_bucket`)?.metrics ?? [];
  const buckets = Object.fromEntries(
    bucketSamples.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)).map((m) => [m.labels!.le!, Number(m.value)]),
  );
  return { buckets, count: value(families, `${name}_count`, labels), sum: value(families, `${name}_sum`, labels) };
}

describe("/metrics", () => {
  it("counts runs by task and outcome with duration and lateness histograms, and they move when jobs run", async () => {
    const before = await scrape();
    expect(before.find((f) => f.name === "hourglass_job_runs_total")?.type).toBe("COUNTER");
    expect(before.find((f) => f.name === "hourglass_job_duration_seconds")?.type).toBe("HISTOGRAM");
    expect(before.find((f) => f.name === "process_cpu_user_seconds_total")).toBeDefined();
    expect(value(before, "hourglass_job_runs_total", { task: "t_ok", outcome: "succeeded" })).toBe(0);

    // Five that succeed (two of them due 10 minutes ago, so they start at least that late) and one that fails.
    await db.pool.query(`select graphile_worker.add_job('t_ok', '{}') from generate_series(1, 3);
      select graphile_worker.add_job('t_ok', '{}', run_at := now() - interval '10 minutes') from generate_series(1, 2);
      select graphile_worker.add_job('t_fail', '{}', max_attempts := 1)`);
    await drainJobs(db, [ok, fail]);

    const after = await scrape();
    expect(value(after, "hourglass_job_runs_total", { task: "t_ok", outcome: "succeeded" })).toBe(5);
    expect(value(after, "hourglass_job_runs_total", { task: "t_fail", outcome: "failed_permanently" })).toBe(1);
    const duration = histogram(after, "hourglass_job_duration_seconds", { task: "t_ok", outcome: "succeeded" });
    expect(duration.count).toBe(5);
    expect(duration.buckets["+Inf"]).toBe(5);
    const bounds = Object.keys(duration.buckets).filter((b) => b !== "+Inf").map(Number).sort((a, b) => a - b);
    expect(bounds).toEqual([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]);
    const cumulative = bounds.map((b) => duration.buckets[String(b)]!);
    expect(cumulative).toEqual([...cumulative].sort((a, b) => a - b)); // never decreasing
    expect(cumulative.at(-1)).toBe(5);
    const late = histogram(after, "hourglass_job_lateness_seconds", { task: "t_ok" });
    expect(late.count).toBe(5);
    // The three due now start within 5 minutes however busy this machine is; the two due 10 minutes ago later.
    expect(late.buckets["300"]).toBe(3);
    expect(late.buckets["3600"]).toBe(5);
    expect(late.sum).toBeGreaterThanOrEqual(1200);
  });

  it("shows the queue by task and state, workers alive, abandoned runs and email outcomes", async () => {
    await db.pool.query(`select graphile_worker.add_job('t_ok', '{}', run_at := now() + interval '1 hour');
      insert into app_public.worker_processes (id, host, pid, label) values ('w1', 'h', 1, 'h:1');
      insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, outcome)
        values (gen_random_uuid(), 1, 't_ok', 1, 1, 'h:2', now(), 'running')`);
    // Crash recovery marks a run abandoned: counted whoever marks it.
    await db.pool.query("update app_public.job_runs set outcome = 'abandoned', finished_at = now() where outcome = 'running'");
    // An email sent and one refused for good.
    smtp.policy = (to) => (to === "nobody@example.com" ? 550 : null);
    await db.pool.query(`select app_private.queue_email('m:1', 'notification', 'someone@example.com', '{"title": "t", "body": "b"}');
      select app_private.queue_email('m:2', 'notification', 'nobody@example.com', '{"title": "t", "body": "b"}')`);
    await drainJobs(db, tasks.filter((t) => t.identifier === "send_email"), testConfig(db, { SMTP_URL: smtp.url }));

    const m = await scrape();
    expect(value(m, "hourglass_jobs", { task: "t_ok", state: "scheduled" })).toBe(1);
    expect(value(m, "hourglass_workers_alive", {})).toBe(1);
    expect(value(m, "hourglass_job_runs_total", { task: "t_ok", outcome: "abandoned" })).toBe(1);
    expect(value(m, "hourglass_email_deliveries_total", { outcome: "sent" })).toBe(1);
    expect(value(m, "hourglass_email_deliveries_total", { outcome: "suppressed" })).toBe(0);
    expect(value(m, "hourglass_email_deliveries_total", { outcome: "failed" })).toBe(1);
  });

  it("counts webhook attempts by result and deliveries by final status", async () => {
    let calls = 0;
    const receiver = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(++calls === 1 ? 503 : 200).end());
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
      const admin = await createUser(db, { isAdmin: true });
      const { sessionId } = await signIn(db, admin.id);
      await asUser(db, sessionId, (c) => c.query("select app_public.create_webhook_endpoint($1, array['offer.sent'])", [url]));
      await db.pool.query("select app_private.emit_events('offer.sent', array['{\"n\": 1}'::jsonb], array['metrics:1'], array['[]'::jsonb])");
      const config = testConfig(db, { WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8" });
      const deliver = tasks.filter((t) => t.identifier === "webhooks__deliver");
      await drainJobs(db, deliver, config);
      await makeJobsDue(db);
      await drainJobs(db, deliver, config);
      expect(calls).toBe(2);
      const m = await scrape();
      expect(value(m, "hourglass_webhook_attempts_total", { result: "5xx" })).toBe(1);
      expect(value(m, "hourglass_webhook_attempts_total", { result: "2xx" })).toBe(1);
      expect(value(m, "hourglass_webhook_deliveries_total", { status: "delivered" })).toBe(1);
    } finally {
      await new Promise((r) => receiver.close(r));
    }
  });

  it("reads neither the history nor the delivery tables on a scrape", async () => {
    await db.pool.query(`
      insert into app_public.job_runs (id, job_id, task_identifier, attempt, max_attempts, worker_id, started_at, finished_at, duration_ms, outcome)
      select gen_random_uuid(), g, 't_ok', 1, 1, 'h:1', now(), now(), 1, 'succeeded' from generate_series(1, 20000) g`);
    // A backend of its own: pg_stat_xact_* also shows a backend's earlier, not yet flushed counts.
    const client = new pg.Client({ connectionString: db.ownerUrl });
    await client.connect();
    try {
      await client.query("begin");
      await client.query("select app_hidden.metrics_snapshot()");
      const { rows } = await client.query(
        `select relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) as scans from pg_stat_xact_user_tables
         where relid in ('app_public.job_runs'::regclass, 'app_private.email_deliveries'::regclass, 'app_public.webhook_deliveries'::regclass,
                         'app_public.webhook_attempts'::regclass, 'app_private.job_metrics'::regclass)
         order by relname`,
      );
      expect(Object.fromEntries(rows.map((r) => [r.relname, Number(r.scans)]))).toEqual({
        email_deliveries: 0, job_metrics: expect.any(Number), job_runs: 0, webhook_attempts: 0, webhook_deliveries: 0,
      });
      expect(Number(rows.find((r) => r.relname === "job_metrics")!.scans)).toBeGreaterThan(0); // the test can see scans
      await client.query("rollback");
    } finally {
      await client.end();
    }
  });

  it("answers 503 within the statement timeout when the database holds the scrape, and frees its connection", async () => {
    const quick = await startApi({ authUrl: db.authUrl, config: testConfig(db, { STATEMENT_TIMEOUT_MS: "300" }), log: testLog, health: { workerRunning: () => null } });
    const locker = await db.pool.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table app_private.metric_counters in access exclusive mode");
      const res = await fetch(`${quick.url}/metrics`, { signal: AbortSignal.timeout(10_000) });
      expect(res.status).toBe(503);
      await locker.query("rollback");
      expect((await fetch(`${quick.url}/metrics`)).status).toBe(200);
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await quick.stop();
    }
  });

  it("asks for the token when METRICS_TOKEN is set", async () => {
    const guarded = await startApi({ authUrl: db.authUrl, config: testConfig(db, { METRICS_TOKEN: "s3cret-metrics" }), log: testLog, health: { workerRunning: () => null } });
    try {
      expect((await fetch(`${guarded.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${guarded.url}/metrics`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
      const families = await scrape({ authorization: "Bearer s3cret-metrics" }, guarded);
      expect(value(families, "hourglass_job_runs_total", { task: "t_ok", outcome: "succeeded" })).toBe(5);
    } finally {
      await guarded.stop();
    }
  });
});
