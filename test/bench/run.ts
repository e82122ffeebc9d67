// `npm run bench`: benchmarks, printed and written to BENCHMARKS.md. Not tests: nothing here
// asserts a timing. Figures are medians over repeated runs, alternated so that machine noise falls
// on both sides of a comparison alike.
//
//  1. No-op job throughput through the full Hourglass wrapper (job history on) versus bare
//     graphile-worker with the same settings, on the same database, in the same run.
//  2. `npm start` to ready on the embedded server: cold (fresh DATA_DIR: initdb + migrations) and
//     warm (existing cluster).
//  3. CPU per job in the wrapper; 4. email rendering; 5. email end to end.
//  6. Offers: expiry lateness, trigger cost of a bulk send, overdue sweep (test/bench/offers.ts).
//  7. Webhooks: deliveries per second, commit-to-delivery latency at 50 events/s (test/bench/webhooks.ts).
//  8. Control plane: admin queries at 20 concurrent clients over 1,000,000 history rows, through
//     GraphQL and in SQL; recovery time after a worker is SIGKILLed (test/bench/control.ts).
//
// Environment: BENCH_DATABASE_URL (superuser; default: an embedded server in a temp directory),
// BENCH_JOBS (default 50000), BENCH_ROUNDS (default 7), BENCH_START_ROUNDS (default 3),
// BENCH_OFFERS_ROUNDS (default 3), BENCH_SECTIONS (default 1,2,3,4,5,6,7,8,9: which sections to run;
// the results file keeps the others from earlier runs).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { run, type Runner } from "graphile-worker";
import { z } from "zod";
import { loadConfig } from "../../src/config.ts";
import { createLogger, workerLogger } from "../../src/log.ts";
import { startEmbedded } from "../../src/db/embedded.ts";
import { migrateDatabase } from "../../src/db/migrate.ts";
import { createDatabaseIfMissing } from "../../src/db/resolve.ts";
import { createPool } from "../../src/db/pool.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask, type ResolvedTask } from "../../src/worker/task.ts";
import { createServices, type Services } from "../../src/worker/services.ts";
import { databaseUrl } from "../helpers/env.ts";
import { bulkCosts, expiryLateness, type BenchHelpers, type Lateness, type LatenessRun } from "./offers.ts";
import { webhookBench, type WebhookFigures } from "./webhooks.ts";
import * as controlPlane from "./control.ts";
import type { ControlFigures, Latency } from "./control.ts";
import { eventLatency, EVENTS_PER_SECOND, EVENTS_SECONDS } from "./events.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const JOBS = Number(process.env.BENCH_JOBS ?? 50_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const START_ROUNDS = Math.max(1, Number(process.env.BENCH_START_ROUNDS ?? 3));
const log = createLogger({ level: "warn", format: "pretty" });

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const range = (xs: number[], digits = 0) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

async function waitFor(check: () => Promise<boolean>, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("benchmark did not finish in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Same settings on both sides: Hourglass's shipped defaults.
const defaults = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://x@localhost/x", AUTHENTICATOR_PASSWORD: "x" });

async function enqueue(pool: pg.Pool, task: string) {
  await pool.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1, json_build_object('n', g), null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $2) g))`,
    [task, JOBS],
  );
}

async function queueEmpty(pool: pg.Pool) {
  const { rows } = await pool.query("select not exists (select 1 from graphile_worker.jobs) as empty");
  return rows[0].empty as boolean;
}

/** A database of its own for one benchmark, migrated, with run-scoped roles. */
async function benchDatabase(serverUrl: string, prefix: string, tasks: ResolvedTask[]) {
  const name = `${prefix}_${randomBytes(3).toString("hex")}`;
  await createDatabaseIfMissing(serverUrl, name);
  const url = databaseUrl(serverUrl, name);
  const roles = { authenticator: `${name}_authenticator`, visitor: `${name}_visitor` };
  await migrateDatabase({ ownerUrl: url, roles, authenticatorPassword: randomBytes(12).toString("hex"), resetPassword: true, log, tasks });
  return { name, url, roles };
}

async function dropBenchDatabase(serverUrl: string, name: string, roles: Record<string, string>) {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database ${admin.escapeIdentifier(name)} with (force)`);
  for (const r of Object.values(roles)) await admin.query(`drop role if exists ${admin.escapeIdentifier(r)}`);
  await admin.end();
}

async function bare(url: string, pool: pg.Pool): Promise<number> {
  await enqueue(pool, "bench_noop");
  const workerPool = createPool(url, { max: defaults.worker.concurrency + 4, name: "bench-bare" }, log);
  const started = performance.now();
  const runner: Runner = await run({
    pgPool: workerPool,
    taskList: { bench_noop: async () => {} },
    parsedCronItems: [],
    concurrency: defaults.worker.concurrency,
    noHandleSignals: true,
    logger: workerLogger(log),
    preset: { worker: { localQueue: { size: defaults.worker.localQueueSize }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  });
  await waitFor(() => queueEmpty(pool));
  const seconds = (performance.now() - started) / 1000;
  await runner.stop();
  await workerPool.end();
  return JOBS / seconds;
}

const noop = resolveTask("bench_noop", defineTask({
  description: "does nothing (benchmark)",
  payload: z.object({ n: z.number() }),
  async run() {},
}));

async function hourglass(url: string, pool: pg.Pool, services: Services): Promise<number> {
  await enqueue(pool, "bench_noop");
  const started = performance.now();
  // Services (email templates) are built once beforehand: a one-off start-up cost, not throughput.
  const worker = await startWorker({ ownerUrl: url, config: defaults, tasks: [noop], log, crontabFile: null, services });
  // Done when every job is gone from the queue and every run is in the history.
  await waitFor(() => queueEmpty(pool));
  await waitFor(async () => {
    if (!(await queueEmpty(pool))) return false;
    const { rows } = await pool.query("select count(*)::int as n from app_public.job_runs where outcome = 'succeeded'");
    return rows[0].n >= JOBS;
  });
  const seconds = (performance.now() - started) / 1000;
  await worker.stop();
  await pool.query("truncate app_public.job_runs");
  return JOBS / seconds;
}

async function throughput(serverUrl: string) {
  const { name, url, roles } = await benchDatabase(serverUrl, "hg_bench", [noop]);
  const pool = createPool(url, { max: 2, name: "bench" }, log);
  const bareRates: number[] = [];
  const hgRates: number[] = [];
  const watchedRates: number[] = [];
  const services = await createServices(defaults, log);
  try {
    // Each round leaves a table of dead job rows behind; without a vacuum in between (this
    // machine's server runs with autovacuum off) every round would start slower than the last.
    const settle = () => pool.query("vacuum analyze");
    for (let i = 0; i < ROUNDS; i++) {
      // Rotate which side goes first, so drift in the machine's load falls on all alike.
      const sides = [
        () => bare(url, pool).then((r) => bareRates.push(r)),
        () => hourglass(url, pool, services).then((r) => hgRates.push(r)),
        () => watched(url, pool, services).then((r) => watchedRates.push(r)),
      ];
      for (const side of [...sides.slice(i % 3), ...sides.slice(0, i % 3)]) {
        await settle();
        await side();
      }
      console.log(
        `  round ${i + 1}: bare ${bareRates.at(-1)!.toFixed(0)} jobs/s, hourglass ${hgRates.at(-1)!.toFixed(0)} jobs/s, ` +
          `hourglass watched ${watchedRates.at(-1)!.toFixed(0)} jobs/s`,
      );
    }
  } finally {
    services.close();
    await pool.end();
    await dropBenchDatabase(serverUrl, name, roles);
  }
  return { bareRates, hgRates, watchedRates };
}

/**
 * The Hourglass side while someone watches job events (a LISTEN connection, registered as the
 * API registers its subscriptions): every run's started and end events are published.
 */
async function watched(url: string, pool: pg.Pool, services: Services): Promise<number> {
  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  let notifications = 0;
  listener.on("notification", () => notifications++);
  try {
    await listener.query('listen "hourglass:job_events"');
    await pool.query("select app_private.watch_job_events(interval '1 hour')");
    const rate = await hourglass(url, pool, services);
    if (notifications === 0) throw new Error("the watched side published no events");
    return rate;
  } finally {
    await pool.query("delete from app_private.job_event_listeners");
    await listener.end();
  }
}

function startToReady(dataDir: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ["src/main.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", DATA_DIR: dataDir, PORT: "0", EMBEDDED_PG_PORT: String(port), LOG_FORMAT: "json", LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let ms: number | null = null;
    const onData = (d: Buffer) => {
      out += d;
      if (ms === null && out.includes('"Hourglass is ready"')) {
        ms = performance.now() - t0;
        child.kill("SIGINT");
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => (ms !== null && code === 0 ? resolve(ms) : reject(new Error(`start failed (${code}):\n${out}`))));
  });
}

async function startTimes() {
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < START_ROUNDS; i++) {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-bench-"));
    await fs.chmod(dir, 0o755);
    const port = 20000 + Math.floor(Math.random() * 20000);
    try {
      cold.push(await startToReady(dir, port));
      warm.push(await startToReady(dir, port));
      console.log(`  round ${i + 1}: cold ${cold.at(-1)!.toFixed(0)} ms, warm ${warm.at(-1)!.toFixed(0)} ms`);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
  return { cold, warm };
}

/**
 * CPU per no-op job spent in the Hourglass wrapper itself (validation, history bookkeeping and
 * batch encoding, time limit), without a database: the history writer's pool is replaced by one
 * that accepts every write. Process CPU time, so less sensitive to machine noise than wall time.
 */
async function wrapperCpu(): Promise<{ wrapped: number[]; plain: number[] }> {
  const { HistoryWriter } = await import("../../src/worker/history.ts");
  const { wrapTask } = await import("../../src/worker/wrap.ts");
  const acceptAll = { query: async () => ({ rows: [] }) } as unknown as pg.Pool;
  const history = new HistoryWriter(acceptAll, { flushDelayMs: defaults.history.flushDelayMs, log });
  const services = await createServices(defaults, log);
  const wrapped = wrapTask(noop, { history, log, workerId: "bench", config: defaults, services });
  const plain = async (_payload: unknown, _helpers: unknown) => {};
  const abort = new AbortController();
  const helpers = (i: number) =>
    ({
      job: { id: String(i), job_queue_id: null, run_at: new Date(), attempts: 1, max_attempts: 25, key: null },
      abortSignal: abort.signal,
    }) as never;
  const N = 200_000;
  const measure = async (fn: (p: unknown, h: never) => unknown) => {
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < N; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, k) => fn({ n: i + k }, helpers(i + k))));
    }
    await history.flush();
    const cpu = process.cpuUsage(cpu0);
    return (cpu.user + cpu.system) / N;
  };
  const out = { wrapped: [] as number[], plain: [] as number[] };
  await measure(wrapped); // warm-up
  for (let i = 0; i < ROUNDS; i++) {
    out.plain.push(await measure(plain));
    out.wrapped.push(await measure(wrapped));
  }
  await history.close();
  services.close();
  return out;
}

/** 4. Rendering: filling a compiled template versus a full MJML render per message. */
async function renderRates(): Promise<{ fill: number[]; mjml: number[] }> {
  const { compileTemplates, fill, TEMPLATES_DIR } = await import("../../src/email/render.ts");
  const mjml2html = (await import("mjml")).default;
  const template = (await compileTemplates()).get("notification")!;
  const layout = await fs.readFile(path.join(TEMPLATES_DIR, "layout.mjml"), "utf8");
  const fragment = await fs.readFile(path.join(TEMPLATES_DIR, "notification.mjml"), "utf8");
  const out = { fill: [] as number[], mjml: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    let t0 = performance.now();
    const fills = 20_000;
    for (let i = 0; i < fills; i++) fill(template, { title: `Offer ${i} expired`, body: `Your offer <${i}> to ACME & co expired.` });
    out.fill.push(fills / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    const renders = 30;
    for (let i = 0; i < renders; i++) {
      const values: Record<string, string> = { title: `Offer ${i} expired`, body: `Your offer ${i} expired.`, subject: `Offer ${i}` };
      await mjml2html(layout.replace("%%BODY%%", fragment).replace(/\{\{(\w+)\}\}/g, (_, k: string) => values[k] ?? ""), { validationLevel: "strict", minify: false });
    }
    out.mjml.push(renders / ((performance.now() - t0) / 1000));
  }
  return out;
}

/** The loopback SMTP server in a child process (see smtp-sink.ts). */
async function smtpSinkProcess(): Promise<{ url: string; count(): Promise<number>; close(): Promise<void> }> {
  const child = spawn(process.execPath, [path.join(import.meta.dirname, "smtp-sink.ts")], { stdio: ["pipe", "pipe", "inherit"] });
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  let buffer = "";
  child.stdout!.on("data", (d: Buffer) => {
    buffer += d.toString();
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const next = () => new Promise<string>((resolve) => (lines.length ? resolve(lines.shift()!) : waiters.push(resolve)));
  const url = await next();
  return {
    url,
    async count() {
      child.stdin!.write("count\n");
      return Number(await next());
    },
    async close() {
      child.stdin!.write("close\n");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

/** 5. Email end to end: queue_email -> send_email job -> SMTP on loopback, all marked sent. */
async function emailRates(serverUrl: string): Promise<number[]> {
  const { loadTasks } = await import("../../src/worker/catalogue.ts");
  const tasks = await loadTasks();
  const { name, url, roles } = await benchDatabase(serverUrl, "hg_bench_mail", tasks);
  const pool = createPool(url, { max: 2, name: "bench" }, log);
  const sink = await smtpSinkProcess();
  const config = loadConfig({
    NODE_ENV: "production", DATABASE_URL: url, AUTHENTICATOR_PASSWORD: "x", SMTP_URL: sink.url, LOG_LEVEL: "warn",
  });
  const rates: number[] = [];
  const EMAILS = 2000;
  const services = await createServices(config, log);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      await pool.query(
        `select count(app_private.queue_email('bench:' || $1 || ':' || g, 'notification', 'user' || g || '@example.com',
           jsonb_build_object('title', 'Offer ' || g || ' expired', 'body', 'Your offer expired.')))
         from generate_series(1, $2) g`,
        [round, EMAILS],
      );
      const before = await sink.count();
      const started = performance.now();
      const worker = await startWorker({ ownerUrl: url, config, tasks, log, crontabFile: null, services });
      await waitFor(async () => {
        const { rows } = await pool.query("select count(*)::int as n from app_private.email_deliveries where key like $1 and state = 'sent'", [`bench:${round}:%`]);
        return rows[0].n >= EMAILS;
      });
      rates.push(EMAILS / ((performance.now() - started) / 1000));
      await worker.stop();
      const received = (await sink.count()) - before;
      if (received !== EMAILS) throw new Error(`expected ${EMAILS} messages at the SMTP server, got ${received}`);
      console.log(`  round ${round + 1}: ${rates.at(-1)!.toFixed(0)} emails/s`);
    }
  } finally {
    services.close();
    await sink.close();
    await pool.end();
    await dropBenchDatabase(serverUrl, name, roles);
  }
  return rates;
}

const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? "1,2,3,4,5,6,7,8,9").split(",").map((x) => x.trim()));
const OFFERS_ROUNDS = Number(process.env.BENCH_OFFERS_ROUNDS ?? 3);

async function main() {
  let serverUrl = process.env.BENCH_DATABASE_URL;
  let server = "BENCH_DATABASE_URL";
  let stop = async () => {};
  let tmp: string | null = null;
  if (!serverUrl) {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-bench-pg-"));
    await fs.chmod(tmp, 0o755);
    const embedded = await startEmbedded({ dir: path.join(tmp, "postgres"), port: 20000 + Math.floor(Math.random() * 20000), log });
    serverUrl = embedded.url("postgres");
    server = "embedded";
    stop = () => embedded.stop();
  }
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  const pgVersion = (await client.query("show server_version")).rows[0].server_version as string;
  await client.end();

  const helpers: BenchHelpers = { log, benchDatabase, dropBenchDatabase, median, waitFor };
  let t;
  let e;
  let lateExact: LatenessRun | undefined;
  let latePoll: LatenessRun | undefined;
  let bulk;
  let hooks: WebhookFigures | undefined;
  let control: ControlFigures | undefined;
  let events: Lateness | undefined;
  try {
    if (SECTIONS.has("1")) {
      console.log(`1. no-op throughput, ${JOBS} jobs per round, ${ROUNDS} rounds (PostgreSQL ${pgVersion}, ${server})`);
      t = await throughput(serverUrl);
    }
    if (SECTIONS.has("5")) {
      console.log(`5. email end to end (queue_email -> send_email -> loopback SMTP), ${ROUNDS} rounds of 2000`);
      e = await emailRates(serverUrl);
    }
    if (SECTIONS.has("6")) {
      console.log("6a. offer expiry lateness, 10000 offers over 60 s: exact wake-ups, then polling only");
      lateExact = await expiryLateness(serverUrl, helpers, true);
      console.log(`  exact wake-ups: p50 ${lateExact.all.p50.toFixed(1)} ms, p99 ${lateExact.all.p99.toFixed(1)} ms, max ${lateExact.all.max.toFixed(1)} ms`);
      latePoll = await expiryLateness(serverUrl, helpers, false);
      console.log(`  polling only: p50 ${latePoll.all.p50.toFixed(1)} ms, p99 ${latePoll.all.p99.toFixed(1)} ms, max ${latePoll.all.max.toFixed(1)} ms`);
      console.log(`6b/6c. bulk send trigger cost and overdue sweep on 1,000,000 offers, ${OFFERS_ROUNDS} rounds`);
      bulk = await bulkCosts(serverUrl, helpers, OFFERS_ROUNDS);
    }
    if (SECTIONS.has("7")) {
      console.log(`7. webhook deliveries to a loopback receiver, ${OFFERS_ROUNDS} rounds of 2000; latency at 50 events/s`);
      hooks = await webhookBench(serverUrl, helpers, OFFERS_ROUNDS);
      console.log(`  latency p50 ${hooks.latency.p50} ms, p99 ${hooks.latency.p99} ms, max ${hooks.latency.max} ms`);
    }
    if (SECTIONS.has("8")) {
      console.log(`8. control plane: admin queries alone and at ${controlPlane.CLIENTS} concurrent clients over 1,000,000 history rows; recovery after SIGKILL`);
      control = await controlPlane.controlBench(serverUrl, helpers, [{ deadAfterMs: 3000, rounds: 5 }, { deadAfterMs: defaults.worker.deadAfterMs, rounds: 3 }]);
    }
    if (SECTIONS.has("9")) {
      console.log(`9. live events: commit to jobEvents subscriber at ${EVENTS_PER_SECOND} jobs/s for ${EVENTS_SECONDS} s`);
      events = await eventLatency(serverUrl, helpers);
      console.log(`  latency p50 ${events.p50} ms, p99 ${events.p99} ms, max ${events.max} ms`);
    }
  } finally {
    await stop();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  }
  let st;
  if (SECTIONS.has("2")) {
    console.log(`2. npm start to ready on the embedded server, ${START_ROUNDS} rounds`);
    st = await startTimes();
  }
  let c;
  if (SECTIONS.has("3")) {
    console.log(`3. wrapper CPU per no-op job, no database, ${ROUNDS} rounds of 200000 jobs`);
    c = await wrapperCpu();
  }
  let r;
  if (SECTIONS.has("4")) {
    console.log(`4. email rendering, ${ROUNDS} rounds`);
    r = await renderRates();
  }

  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const runLine = `_Measured ${new Date().toISOString()} on ${os.cpus().length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, PostgreSQL ${pgVersion} (${server}); \`npm run bench\` with BENCH_SECTIONS=${[...SECTIONS].join(",")}, BENCH_JOBS=${JOBS}, BENCH_ROUNDS=${ROUNDS}, BENCH_START_ROUNDS=${START_ROUNDS}, BENCH_OFFERS_ROUNDS=${OFFERS_ROUNDS}._`;
  const lines: string[] = [];
  if (t) {
    const ratio = median(t.hgRates) / median(t.bareRates);
    const pairRatios = t.hgRates.map((h, i) => h / t.bareRates[i]!);
    lines.push(
      "## 1. No-op job throughput: Hourglass wrapper with job history vs bare graphile-worker",
      "",
      `Same database, same settings (Hourglass defaults: concurrency ${defaults.worker.concurrency}, local queue ${defaults.worker.localQueueSize},`,
      "completion/failure batching 0 ms); each round runs every side, in rotating order, after a VACUUM.",
      "Timed from worker start (email templates compiled beforehand, a one-off start-up cost) until the queue is empty and,",
      "for Hourglass, every run is written to `app_public.job_runs`.",
      "",
      "| | median jobs/s | range |",
      "|---|---:|---:|",
      `| bare graphile-worker 0.18 | ${median(t.bareRates).toFixed(0)} | ${range(t.bareRates)} |`,
      `| Hourglass (wrapper + history) | ${median(t.hgRates).toFixed(0)} | ${range(t.hgRates)} |`,
      `| ratio of medians | ${(ratio * 100).toFixed(1)}% | goal ≥ 80% |`,
      `| median of per-round ratios | ${(median(pairRatios) * 100).toFixed(1)}% | ${range(pairRatios.map((x) => x * 100), 1)}% |`,
      `| Hourglass while job events are watched | ${median(t.watchedRates).toFixed(0)} | ${range(t.watchedRates)} |`,
      `| watched / unwatched, median of per-round ratios | ${(median(t.watchedRates.map((w, i) => w / t.hgRates[i]!)) * 100).toFixed(1)}% | |`,
      "",
      "Job events (the dashboard's live updates, \`jobEvents\`) are published only while someone watches; the third row has a",
      "LISTEN connection registered with \`app_private.watch_job_events()\`, so every run's started and end events are sent.",
      "",
    );
  }
  if (st) {
    lines.push(
      "## 2. `npm start` to ready (embedded PostgreSQL, API + worker)",
      "",
      "Timed from spawning `node src/main.ts` to its \"Hourglass is ready\" log line.",
      "",
      "| | median ms | range |",
      "|---|---:|---:|",
      `| cold (fresh DATA_DIR: initdb, migrations) | ${median(st.cold).toFixed(0)} | ${range(st.cold)} |`,
      `| warm (existing cluster) | ${median(st.warm).toFixed(0)} | ${range(st.warm)} |`,
      "",
    );
  }
  if (c) {
    lines.push(
      "## 3. CPU per no-op job in the Hourglass wrapper (no database)",
      "",
      "Process CPU time per job: the wrapped task (payload validation, history bookkeeping and batch",
      "encoding, time limit) against a plain async function called the same way; the history writer's",
      "pool accepts every write without a database.",
      "",
      "| | median µs/job | range |",
      "|---|---:|---:|",
      `| plain async function | ${median(c.plain).toFixed(2)} | ${range(c.plain, 2)} |`,
      `| Hourglass wrapper + history | ${median(c.wrapped).toFixed(2)} | ${range(c.wrapped, 2)} |`,
      "",
    );
  }
  if (r) {
    lines.push(
      "## 4. Email rendering (template `notification`)",
      "",
      "| | median per second | range | goal |",
      "|---|---:|---:|---|",
      `| fill a compiled template (HTML-escaped values, text part, subject) | ${median(r.fill).toFixed(0)} | ${range(r.fill)} | > 10,000 |`,
      `| full MJML render per message | ${median(r.mjml).toFixed(0)} | ${range(r.mjml)} | |`,
      "",
    );
  }
  if (e) {
    lines.push(
      "## 5. Email end to end",
      "",
      "2,000 emails queued with `app_private.queue_email`, sent by a worker with the shipped defaults through",
      "`send_email` (claim, render, SMTP, mark sent) to a loopback SMTP server (smtp-server, counting, in its",
      "own process); timed from worker start (templates compiled beforehand) until every delivery is `sent`.",
      "",
      "| | median emails/s | range | goal |",
      "|---|---:|---:|---|",
      `| end to end | ${median(e).toFixed(0)} | ${range(e)} | ≥ 500 |`,
      "",
    );
  }
  if (lateExact && latePoll && bulk) {
    const tr = bulk.trigger;
    const ratios = tr.all.map((a, i) => a / tr.bare[i]!);
    const spreadRatios = tr.spreadAll.map((a, i) => a / tr.spreadBare[i]!);
    const perRow = (ms: number) => ((ms * 1000) / tr.rows).toFixed(1);
    const late = (name: string, which: string, l: Lateness) =>
      `| ${name} | ${which} | ${l.n} | ${l.p50.toFixed(1)} | ${l.p99.toFixed(1)} | ${l.max.toFixed(1)} |`;
    lines.push(
      "## 6. Offers",
      "",
      "### 6a. Expiry lateness",
      "",
      "10,000 offers sent in one statement with expires_at spread evenly over 60 seconds (the first 5 s out);",
      "a worker with the shipped defaults runs their `offers__expire` jobs. Lateness = when the update to EXPIRED",
      "committed (clock_timestamp() in a bench-only trigger) − expires_at. Each expiry also enqueues its",
      "notification fan-out job, so the worker runs two jobs per offer.",
      "",
      "| | offers | n | p50 ms | p99 ms | max ms |",
      "|---|---|---:|---:|---:|---:|",
      late("exact wake-ups (default)", "all", lateExact.all),
      late("exact wake-ups (default)", "due 2 s or more after the first", lateExact.warm),
      late(`polling only (WORKER_EXACT_WAKE=false, poll ${defaults.worker.pollIntervalMs} ms)`, "all", latePoll.all),
      late(`polling only (WORKER_EXACT_WAKE=false, poll ${defaults.worker.pollIntervalMs} ms)`, "due 2 s or more after the first", latePoll.warm),
      "",
      "Goal p99 ≤ 1 s, stretch ≤ 100 ms. The source system's hourly sweep averages 30 minutes late. The worker",
      "starts with the run, so the first offers meet fresh server backends: each compiles the PL/pgSQL of the",
      "offers triggers and of graphile-worker on its first job (tens of milliseconds, ten connections at once on",
      "two cores); the second row leaves those first 2 seconds out. A long-running worker keeps its",
      "connections open (pool `min` = concurrency).",
      "",
      "### 6b. Trigger cost of a bulk send",
      "",
      `\`update app_public.offers set status = 'SENT' where status = 'DRAFT'\` on ${tr.rows.toLocaleString("en")} drafts in a table of`,
      `${tr.tableRows.toLocaleString("en")} offers, rolled back after each run (a database-wide VACUUM between runs). With every trigger, the statement`,
      "schedules 100,000 keyed `offers__expire` jobs and 100 notification fan-out jobs. Without triggers, the same",
      "statement also sets sent_at and expires_at (which the row rules would).",
      "",
      "| | median ms | range | µs per row |",
      "|---|---:|---:|---:|",
      `| no triggers | ${median(tr.bare).toFixed(0)} | ${range(tr.bare)} | ${perRow(median(tr.bare))} |`,
      `| row rules only (statement triggers off) | ${median(tr.rulesOnly).toFixed(0)} | ${range(tr.rulesOnly)} | ${perRow(median(tr.rulesOnly))} |`,
      `| all triggers (rules, expiry jobs, notifications) | ${median(tr.all).toFixed(0)} | ${range(tr.all)} | ${perRow(median(tr.all))} |`,
      `| ratio all / none, median of per-round ratios | ${median(ratios).toFixed(2)}× | ${range(ratios, 2)}× | goal ≤ 3×, stretch ≤ 2× |`,
      `| for reference: \`graphile_worker.add_jobs\` alone, the same 100,000 keyed jobs, no update | ${median(tr.addJobsOnly).toFixed(0)} | ${range(tr.addJobsOnly)} | ${perRow(median(tr.addJobsOnly))} |`,
      "",
      "The last row is the floor under any trigger that gives each offer its own keyed job: graphile-worker's insert",
      `(its indexes, the job key's unique check, a foreign-key check per job). Rules plus that floor come to`,
      `${((median(tr.rulesOnly) + median(tr.addJobsOnly)) / median(tr.bare)).toFixed(2)}× the bare statement in this run (the add_jobs row also reads the drafts, so slightly less in truth): about the least`,
      "any design with a keyed job per offer could reach.",
      "",
      `The issue's reference conditions — ${tr.spreadRows.toLocaleString("en")} rows spread over the same table (\`... and id % 10 = 0\`, a sequential`,
      "scan of the table either way):",
      "",
      "| | median ms | range |",
      "|---|---:|---:|",
      `| no triggers | ${median(tr.spreadBare).toFixed(0)} | ${range(tr.spreadBare)} |`,
      `| all triggers | ${median(tr.spreadAll).toFixed(0)} | ${range(tr.spreadAll)} |`,
      `| ratio, median of per-round ratios | ${median(spreadRatios).toFixed(2)}× | ${range(spreadRatios, 2)}× |`,
      "",
      "### 6c. Overdue sweep",
      "",
      `\`app_private.sweep_overdue_offers(1000)\` on the same table (after 6b): ${bulk.sweep.overdue.toLocaleString("en")} SENT offers overdue`,
      "with no job (1%), 90,000 SENT and due later, the rest drafts or expired.",
      "",
      "| | median ms | range | total ms |",
      "|---|---:|---:|---:|",
      `| per batch of 1000 (${bulk.sweep.batchMs.length} calls) | ${median(bulk.sweep.batchMs).toFixed(1)} | ${range(bulk.sweep.batchMs, 1)} | ${bulk.sweep.totalMs.toFixed(0)} |`,
      "",
      "Plan of the batch selection (before the sweep ran):",
      "",
      "```",
      ...bulk.sweep.plan,
      "```",
      "",
    );
  }
  if (hooks) {
    lines.push(
      "## 7. Webhooks",
      "",
      "2,000 events emitted with `app_private.emit_events` to one endpoint (a loopback HTTP receiver in the bench",
      "process answering 204), delivered by a worker with the shipped defaults through `webhooks__deliver` (read,",
      "sign, POST, record the attempt); timed from worker start until every delivery is `delivered`. Then one event",
      "every 20 ms (50/s) for 20 s, each in its own transaction: latency = arrival at the receiver − commit.",
      "",
      "| | median | range | goal |",
      "|---|---:|---:|---|",
      `| deliveries per second | ${median(hooks.rates).toFixed(0)} | ${range(hooks.rates)} | ≥ 300 |`,
      "",
      "| commit to delivery at 50 events/s | events | p50 ms | p99 ms | max ms | goal |",
      "|---|---:|---:|---:|---:|---|",
      `| | ${hooks.latency.n} | ${hooks.latency.p50} | ${hooks.latency.p99} | ${hooks.latency.max} | p99 ≤ 1000 |`,
      "",
    );
  }
  /**
   * Where each GraphQL request's CPU went at CLIENTS clients, and what a closed loop on this
   * machine's cores makes of it: the floor under the mean latency, and the CPU per request the goal
   * would need at the reference's own p95-to-mean ratio.
   */
  const cpuLines = (control: ControlFigures) => {
    const c = controlPlane;
    const cores = os.cpus().length;
    const ms = (x: number | null) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(2));
    const floor = (total: number | null) => (total === null ? null : (c.CLIENTS * total) / cores);
    const reference = control.queries.find((q) => q.reference);
    const ratio = reference ? reference.graphql.p95 / reference.graphql.mean : NaN;
    const remote = control.queries.every((q) => q.cpu.postgres === null);
    return [
      `CPU per GraphQL request in the same ${c.CLIENTS}-client rounds (their warm-up requests included), read from /proc: the API process,`,
      "every process named `postgres` on this machine (the server's backends, and its background processes), and the bench process",
      "(the clients). Other = the machine's busy time charged to none of the three: mostly the kernel's network processing (softirq)",
      `for the loopback traffic, which no process is charged for, and any other program. A closed loop that is bound by CPU cannot`,
      `answer faster on average than ${c.CLIENTS} × total / ${cores} cores: the floor column. Steal = the share of the machine's time in`,
      "those rounds that its host gave to other guests.",
      ...(remote ? ["", "(No process named `postgres` ran on this machine: the server is elsewhere, so its CPU is not counted here.)"] : []),
      "",
      "| query | API ms | PostgreSQL ms | clients ms | total ms | other ms | floor ms | GraphQL mean ms | p95 ms | steal % |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...control.queries.map(
        (q) =>
          `| ${q.name} | ${ms(q.cpu.api)} | ${ms(q.cpu.postgres)} | ${ms(q.cpu.clients)} | ${ms(q.cpu.total)} | ${ms(q.cpu.other)} | ` +
          `${ms(floor(q.cpu.total))} | ${q.graphql.mean.toFixed(1)} | ${q.graphql.p95.toFixed(1)} | ${q.cpu.stealPercent.toFixed(1)} |`,
      ),
      ...(reference && Number.isFinite(ratio) && !remote
        ? [
            "",
            `The reference's p95 is ${ratio.toFixed(2)}× its mean in this run. At that ratio, a p95 of ${c.GOAL_P95_MS} ms needs a mean of ` +
              `${(c.GOAL_P95_MS / ratio).toFixed(1)} ms, which on ${cores} cores at ${c.CLIENTS} clients is at most ` +
              `${((c.GOAL_P95_MS / ratio) * cores / c.CLIENTS).toFixed(2)} ms of CPU per request, API, PostgreSQL and clients together; ` +
              `the reference itself costs ${ms(reference.cpu.total)} ms.`,
          ]
        : []),
    ];
  };
  if (control) {
    const ms = (x: number) => (Number.isNaN(x) ? "–" : x.toFixed(1));
    const lat = (l: Latency) =>
      l.n || l.timeouts ? `${ms(l.p50)} | ${ms(l.p95)} | ${ms(l.max)} | ${l.n}${l.timeouts ? ` (+${l.timeouts} timed out)` : ""}` : "– | – | – | not run";
    const alone = (l: Latency) => (l.timeouts ? `timed out (${l.n} answered)` : ms(l.p50));
    const c = controlPlane;
    const verdict = (q: ControlFigures["queries"][number]) =>
      q.reference ? "(reference)" : q.graphql.p95 <= c.GOAL_P95_MS && !q.graphql.timeouts ? "met" : "**missed**";
    const seconds = (x: number) => (x / 1000).toFixed(1);
    const byDeadAfter = Map.groupBy(control.recovery, (r) => r.deadAfterMs);
    lines.push(
      "## 8. Control plane",
      "",
      `${control.historyRows.toLocaleString("en")} rows of job history over ${c.HISTORY_DAYS} days (every crontab entry's ticks; the other tasks' runs by`,
      "weight, with their real key shapes such as `offers:<n>:expire`; 95.5% succeeded, 2% failed_retrying, 0.5% failed_permanently,",
      `0.3% timed_out, 0.2% abandoned, 1.5% skipped), ${control.queueJobs.toLocaleString("en")} jobs in the queue (scheduled, due, 150 failed), ${control.tasks} tasks,`,
      `${control.schedules} schedules, four worker heartbeats; VACUUM ANALYZE after the load (${control.loadSeconds.toFixed(0)} s in all).`,
      "",
      `Each query runs alone first (one client: two requests to warm up, then up to ${c.SINGLE_REQUESTS} or ${c.SINGLE_LIMIT_MS / 1000} s), then from`,
      `${c.CLIENTS} clients at once, each sending its next request as soon as the last one answered, in ${c.ROUNDS} rounds that take turns with the other`,
      `queries' (this machine's load comes in bursts; one long phase per query let a burst fall on one query): each round ${c.LOADED_WARM_UP} untimed requests`,
      `per client, then up to ${c.REQUESTS / c.ROUNDS} timed ones or ${c.ROUND_LIMIT_MS / 1000} s; the figures are over all rounds' requests (up to ${c.REQUESTS}).`,
      `This is a closed loop without think time, so on ${os.cpus().length} cores a request that costs *c* ms alone waits about ${c.CLIENTS}·*c*/${os.cpus().length} ms.`,
      `GraphQL: \`POST /graphql\` as an admin (bearer session) to the API in a process of its own (NODE_ENV=production, \`API_POOL_SIZE\` at its default of ${defaults.apiPoolSize}),`,
      "from node:http clients with keep-alive connections in the bench process (they share the two cores; fetch cost more).",
      "SQL: the same query as the visitor role with the admin's session, timed from `begin` to `commit`. Both under the API's",
      `statement_timeout (${c.STATEMENT_TIMEOUT_MS} ms): a cancelled request is counted, not timed; a query that timed out alone is not run`,
      `at ${c.CLIENTS} clients. Offer ids in lookups are random (1–50,000; most have one to a few runs). The first row is a reference,`,
      "not one of the issue's queries: one row by key, what a request through the API costs at the least.",
      "",
      `| query | GraphQL alone p50 ms | GraphQL p50 ms | p95 ms | max ms | n | SQL alone p50 ms | SQL p50 ms | p95 ms | max ms | n | GraphQL p95 ≤ ${c.GOAL_P95_MS} ms |`,
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
      ...control.queries.map((q) => `| ${q.name} | ${alone(q.graphqlAlone)} | ${lat(q.graphql)} | ${alone(q.sqlAlone)} | ${lat(q.sql)} | ${verdict(q)} |`),
      "",
      ...cpuLines(control),
      "",
      `The overview again from ${c.CLIENTS} clients, through one API process per pool size (\`API_POOL_SIZE\`), started together and taking turns`,
      `in ${c.ROUNDS} rounds as above: how many connections an API process should use when the database, the API and the clients share ${os.cpus().length} cores.`,
      "",
      "| `API_POOL_SIZE` | GraphQL p50 ms | p95 ms | max ms | n |",
      "|---:|---:|---:|---:|---:|",
      ...control.pools.map((p) => `| ${p.size}${p.size === defaults.apiPoolSize ? " (default)" : ""} | ${lat(p.graphql)} |`),
      "",
      `Crash recovery, on the same database, with real worker processes (test/helpers/worker-process.ts): a victim takes ${c.KILLED_JOBS} jobs`,
      `that would run for ten minutes (${c.VICTIM_CONCURRENCY} running, the rest in its local queue); a second worker starts and beats; the victim is`,
      "SIGKILLed at a random point of the live worker's recovery cycle (every third of WORKER_DEAD_AFTER_MS). Released = its jobs",
      "unlocked by that recovery (seen by polling every 20 ms); running again = `started_at` of each job's next run, on the live",
      "worker. Both workers have the same WORKER_DEAD_AFTER_MS. The recovering worker announces the released jobs on",
      "`jobs:insert` (graphile_worker.force_unlock_workers itself announces nothing), so they start without waiting for a poll.",
      "",
      "| WORKER_DEAD_AFTER_MS | kills | kill → released, median (max) s | kill → first running again, median (max) s | kill → all running again, median (max) s |",
      "|---:|---:|---:|---:|---:|",
      ...[...byDeadAfter].map(([deadAfter, rs]) =>
        `| ${deadAfter} | ${rs.length} | ${seconds(median(rs.map((r) => r.releasedMs)))} (${seconds(Math.max(...rs.map((r) => r.releasedMs)))}) | ` +
          `${seconds(median(rs.map((r) => r.firstMs)))} (${seconds(Math.max(...rs.map((r) => r.firstMs)))}) | ` +
          `${seconds(median(rs.map((r) => r.allMs)))} (${seconds(Math.max(...rs.map((r) => r.allMs)))}) |`,
      ),
      "",
    );
    for (const [name, plan] of control.plans) {
      lines.push(`Plan of "${name}" in SQL, as the visitor with the admin's session, after the timed requests:`, "", "```", ...plan, "```", "");
    }
  }
  if (events) {
    lines.push(
      "## 9. Live events",
      "",
      `One job enqueued every ${1000 / EVENTS_PER_SECOND} ms (${EVENTS_PER_SECOND}/s) for ${EVENTS_SECONDS} s, each with \`app_private.add_job\` in its own`,
      "transaction; an admin's `jobEvents(keyPrefix:)` subscription over graphql-ws to an API in a process of its own",
      "(NODE_ENV=production). Latency = arrival of the `enqueued` event at the client − the add_job's commit",
      "acknowledged to the bench (so a slightly negative value is possible: the event can overtake the acknowledgement).",
      "",
      "| commit to subscriber | events | p50 ms | p99 ms | max ms | goal |",
      "|---|---:|---:|---:|---:|---|",
      `| | ${events.n} | ${events.p50} | ${events.p99} | ${events.max} | within 1 s |`,
      "",
    );
  }
  const fresh = splitSections(lines.join("\n"), runLine);
  const file = path.join(ROOT, "BENCHMARKS.md");
  const kept = splitSections(await fs.readFile(file, "utf8").catch(() => ""), null);
  const merged = new Map([...kept, ...fresh].sort((a, b) => a[0] - b[0]));
  const text = [BENCHMARKS_HEADER, ...merged.values()].join("\n");
  await fs.writeFile(file, text);
  console.log("\n" + [...fresh.values()].join("\n"));
}

const BENCHMARKS_HEADER = [
  "# Benchmarks",
  "",
  "Written by `npm run bench` (test/bench/run.ts). Medians over repeated rounds in one run; ranges are min–max.",
  "A run replaces the sections it measured (all, or those in BENCH_SECTIONS) and keeps the others; each section",
  "says when and where it was measured. These machines are noisy: compare figures within a section, not across runs.",
  "",
].join("\n");

/** Sections of a results text by number ("## 6. ..."); a fresh section gets its run line under its heading. */
function splitSections(text: string, runLine: string | null): Map<number, string> {
  const sections = new Map<number, string>();
  const parts = text.split(/^(?=## \d+\. )/m).filter((p) => /^## \d+\. /.test(p));
  for (const part of parts) {
    const n = Number(/^## (\d+)\./.exec(part)![1]);
    const body = part.replace(/\n*$/, "\n");
    if (!runLine) {
      sections.set(n, body);
      continue;
    }
    const [heading, ...rest] = body.split("\n");
    sections.set(n, [heading, "", runLine, ...rest].join("\n"));
  }
  return sections;
}

await main();
