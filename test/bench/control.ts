// Control-plane benchmarks for `npm run bench` (section 8): what the admin's overview, task
// catalogue, history aggregates, key lookups and schedules cost alone and at 20 concurrent clients over a
// million rows of job history, through GraphQL (a real API in a process of its own, as deployed)
// and in plain SQL as the visitor role with the same admin session; and how long the jobs of a
// SIGKILLed worker take to run again on a live one (real worker processes).
//
// Run directly (`node test/bench/control.ts`) with the API's environment, this file is that API
// process: it prints "READY <url>" once it listens and stops on SIGTERM.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import path from "node:path";
import pg from "pg";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { withCredentials } from "../../src/db/pool.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { BenchDb, BenchHelpers } from "./offers.ts";
import { CpuAccount } from "./cpu.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const NODE = path.join(ROOT, "node_modules/.bin/node");
const WORKER_SCRIPT = path.join(ROOT, "test/helpers/worker-process.ts");

export const HISTORY_ROWS = 1_000_000;
export const HISTORY_DAYS = 30;
export const CLIENTS = 20;
export const GOAL_P95_MS = 50;
/**
 * Timed requests per query and path at CLIENTS clients (warmed up alone before), in ROUNDS rounds
 * that take turns with the other queries' (this machine's load comes in bursts of a second or two:
 * one long phase per query let a burst fall on one query alone), each round until it has sent
 * REQUESTS / ROUNDS or ROUND_LIMIT_MS ran out.
 */
export const REQUESTS = 1000;
export const ROUNDS = 4;
export const ROUND_LIMIT_MS = 4_000;
/** The same alone (one client): what one request costs without queueing. */
export const SINGLE_REQUESTS = 50;
/**
 * Untimed requests from each client before each round's timed ones at CLIENTS clients: the API's
 * pool (and the SQL side's) opens its connections then — tens of milliseconds each for a new
 * backend and its first plans, one request per client, 5% of a 400-request phase: they were its p95.
 */
export const LOADED_WARM_UP = 3;
export const SINGLE_LIMIT_MS = 5_000;
/** The API's own limit (STATEMENT_TIMEOUT_MS at its default), applied to the SQL path too. */
export const STATEMENT_TIMEOUT_MS = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://x@localhost/x", AUTHENTICATOR_PASSWORD: "x" }).statementTimeoutMs;
/** Offer ids in the history's keys (offers:<n>:expire): a prefix lookup finds a few runs. */
const OFFERS = 50_000;

export interface Latency {
  n: number;
  /** Requests cancelled by the statement timeout: counted here, left out of the percentiles. */
  timeouts: number;
  mean: number;
  p50: number;
  p95: number;
  max: number;
}
export interface QueryFigures {
  name: string;
  /** Not one of the issue's queries: what the API costs at the least. */
  reference: boolean;
  graphql: Latency;
  sql: Latency;
  /** The same from one client. */
  graphqlAlone: Latency;
  sqlAlone: Latency;
  /** CPU per GraphQL request at CLIENTS clients (warm-up requests included), by process. */
  cpu: ReturnType<CpuAccount["perRequest"]>;
}
export interface RecoveryRun {
  deadAfterMs: number;
  /** Jobs locked by the killed worker: running, and waiting in its local queue. */
  orphans: number;
  /** Its running history rows marked abandoned. */
  abandoned: number;
  /** How long before the kill its last heartbeat was. */
  lastBeatMs: number;
  /** Kill → its jobs unlocked (seen by polling every 20 ms). */
  releasedMs: number;
  /** Kill → the first, and the last, orphan started again (started_at of its next run). */
  firstMs: number;
  allMs: number;
}
export interface ControlFigures {
  historyRows: number;
  queueJobs: number;
  tasks: number;
  schedules: number;
  loadSeconds: number;
  queries: QueryFigures[];
  /** EXPLAIN (ANALYZE, BUFFERS) of the SQL of each query whose GraphQL p95 missed the goal (without ANALYZE if it timed out alone), by name. */
  plans: Map<string, string[]>;
  recovery: RecoveryRun[];
  /** The overview at CLIENTS clients through APIs whose pools differ (API_POOL_SIZE), by pool size. */
  pools: { size: number; graphql: Latency }[];
}

/** API_POOL_SIZE values compared on the overview (10 is the default). */
export const POOL_SIZES = [4, 10, 20];

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;

function latency(ms: number[], timeouts: number): Latency {
  const s = [...ms].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || NaN);
  return { n: s.length, timeouts, mean, p50: percentile(s, 50), p95: percentile(s, 95), max: s.at(-1) ?? NaN };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One million history rows over the last 30 days in time order (as the history writer appends
 * them): every crontab entry's ticks (key cron:<id>), and event-driven runs of the other tasks by
 * weight with their real key shapes (offers:<n>:expire, email_deliveries:<n>:send, ...). Mostly
 * succeeded; 2% failed_retrying, 0.5% failed_permanently, 0.3% timed_out, 0.2% abandoned, 1.5%
 * skipped; exponential durations around each task's mean. Eight runs still running.
 */
async function loadHistory(client: pg.Client) {
  await client.query(
    `insert into app_public.job_runs (id, job_id, task_identifier, queue_name, job_key, attempt, max_attempts, payload,
       worker_id, run_at, started_at, finished_at, duration_ms, outcome, error, result)
     with event_tasks (task, weight, mean_ms, key_prefix, key_suffix, key_range) as (values
       ('send_email', 300, 180, 'email_deliveries:', ':send', 10000000),
       ('webhooks__deliver', 200, 90, 'webhook_deliveries:', ':deliver', 10000000),
       ('offers__expire', 110, 8, 'offers:', ':expire', $2::integer),
       ('offers__notify', 70, 25, null, null, 0),
       ('offers__queue_notifications', 30, 15, null, null, 0),
       ('users__send_login_link', 60, 30, 'users:', ':login_link', 20000),
       ('exchanges__match', 15, 120, 'exchanges:', ':match', 5000),
       ('exchanges__send_reminders', 40, 60, 'exchanges:', ':reminder:7', 5000),
       ('exchanges__complete', 15, 20, 'exchanges:', ':complete', 5000),
       ('exchanges__send_purge_warning', 10, 30, 'exchanges:', ':purge_warning', 5000),
       ('exchanges__purge', 10, 40, 'exchanges:', ':purge', 5000)),
     slots as (
       select t.*, sum(weight) over (order by task) - weight as lo, sum(weight) over (order by task) as hi, sum(weight) over () as total
       from event_tasks t),
     patterns as (
       select s.id, s.task_identifier, app_hidden.cron_values(f[1], 0, 59) as m, app_hidden.cron_values(f[2], 0, 23) as h,
              app_hidden.cron_values(f[3], 1, 31) as dom, app_hidden.cron_values(f[5], 0, 6) as dow
       from app_public.schedules s, regexp_split_to_array(btrim(s.pattern), '\\s+') f),
     ticks as materialized (
       select p.task_identifier as task, 'cron:' || p.id as job_key, t as run_at
       from patterns p, generate_series(date_trunc('minute', now() - interval '${HISTORY_DAYS} days'), now(), interval '1 minute') t
       where extract(minute from t at time zone 'UTC')::integer = any (p.m) and extract(hour from t at time zone 'UTC')::integer = any (p.h)
         and extract(day from t at time zone 'UTC')::integer = any (p.dom) and extract(dow from t at time zone 'UTC')::integer = any (p.dow)),
     events as (
       select g, now() - interval '${HISTORY_DAYS} days' + interval '${HISTORY_DAYS} days' * (g::double precision / n.count) as run_at, random() as pick
       from (select $1::integer - (select count(*) from ticks)::integer as count) n, generate_series(1, n.count) g),
     runs as (
       select e.run_at, s.task, s.mean_ms, false as cron,
              case when s.key_prefix is not null then s.key_prefix || (1 + floor(random() * s.key_range))::bigint || s.key_suffix end as job_key,
              random() as o, random() as d, random() as l
       from events e join slots s on e.pick * s.total >= s.lo and e.pick * s.total < s.hi
       union all
       select run_at, task, 150, true, job_key, random(), random(), random() from ticks),
     shaped as (
       select r.*, row_number() over (order by r.run_at) as n,
              case when o < 0.955 then 'succeeded' when o < 0.975 then 'failed_retrying' when o < 0.98 then 'failed_permanently'
                   when o < 0.983 then 'timed_out' when o < 0.985 then 'abandoned' else 'skipped' end as outcome,
              r.run_at + -ln(1 - l) * interval '15 milliseconds' as started_at
       from runs r),
     timed as (
       select s.*, case s.outcome when 'timed_out' then 60000 + d * 1000 when 'abandoned' then 30000 + d * 300000
                   else s.mean_ms * -ln(1 - d) end as duration_ms
       from shaped s)
     select gen_random_uuid(), 1000000 + n, task, null, job_key,
            case when outcome = 'failed_retrying' then 1 + floor(d * 3)::integer else 1 end, 25,
            case when cron then '{}'::jsonb else jsonb_build_object('n', n) end,
            'worker-' || (n % 4) || '.internal:' || (4000 + n % 4), run_at, started_at,
            started_at + duration_ms * interval '1 millisecond', duration_ms, outcome,
            case outcome
              when 'timed_out' then 'The task exceeded its time limit of 60000 ms'
              when 'abandoned' then 'The worker worker-2.internal:4002 stopped heartbeating'
              when 'failed_retrying' then (array['connect ETIMEDOUT 10.0.4.7:443', 'HTTP 503 from the receiver', 'SMTP 451 4.7.1 Try again later', 'deadlock detected'])[1 + floor(d * 4)::integer]
              when 'failed_permanently' then (array['HTTP 410 Gone: endpoint disabled', 'Invalid payload: id is required', 'SMTP 550 5.1.1 No such user'])[1 + floor(d * 3)::integer]
            end,
            case when cron and outcome = 'succeeded' then jsonb_build_object('deleted', floor(d * 200)::integer, 'remaining', 0) end
     from timed
     order by started_at`,
    [HISTORY_ROWS - 8, OFFERS],
  );
  await client.query(
    `insert into app_public.job_runs (id, job_id, task_identifier, job_key, attempt, max_attempts, payload, worker_id, run_at, started_at, outcome)
     select gen_random_uuid(), 3000000 + g, 'send_email', 'email_deliveries:' || (20000000 + g) || ':send', 1, 25,
            jsonb_build_object('n', g), 'worker-' || (g % 4) || '.internal:' || (4000 + g % 4),
            now() - g * interval '1 second', now() - g * interval '1 second' + interval '3 milliseconds', 'running'
     from generate_series(1, 8) g`,
  );
}

/**
 * A queue as it would look mid-day: offers' expiry jobs and exchange reminders scheduled over the
 * next week, emails and webhook deliveries due (no worker for them runs here), 150 deliveries out
 * of attempts; and four worker heartbeat rows, one of them long stale.
 */
async function loadQueue(client: pg.Client) {
  const spec = (task: string, payload: string, runAt: string, key: string, n: number) =>
    `select count(*) from graphile_worker.add_jobs(array(
       select row('${task}', ${payload}, null, ${runAt}, null, ${key}, null, null)::graphile_worker.job_spec
       from generate_series(1, ${n}) g))`;
  await client.query(spec("offers__expire", "json_build_object('offerId', 60000 + g)", "now() + random() * interval '7 days'", "'offers:' || (60000 + g) || ':expire'", 2000));
  await client.query(spec("exchanges__send_reminders", "json_build_object('exchangeId', 6000 + g)", "now() + random() * interval '14 days'", "'exchanges:' || (6000 + g) || ':reminder:7'", 400));
  await client.query(spec("send_email", "json_build_object('deliveryId', 30000000 + g)", "now() - random() * interval '1 minute'", "'email_deliveries:' || (30000000 + g) || ':send'", 300));
  await client.query(spec("webhooks__deliver", "json_build_object('deliveryId', 30000000 + g)", "now() - random() * interval '1 minute'", "'webhook_deliveries:' || (30000000 + g) || ':deliver'", 350));
  await client.query(
    `select count(*) from graphile_worker.permanently_fail_jobs(
       array(select id from graphile_worker.jobs where task_identifier = 'webhooks__deliver' order by id limit 150), 'HTTP 500 from the receiver')`,
  );
  await client.query(
    `insert into app_public.worker_processes (id, host, pid, label, running, last_seen_at)
     values ('bench-pool-1', 'worker-1.internal', 4001, 'worker-1.internal:4001', 2, now()),
            ('bench-pool-2', 'worker-2.internal', 4002, 'worker-2.internal:4002', 3, now()),
            ('bench-pool-3', 'worker-3.internal', 4003, 'worker-3.internal:4003', 3, now()),
            ('bench-pool-0', 'worker-0.internal', 4000, 'worker-0.internal:4000', 0, now() - interval '5 minutes')`,
  );
}

interface QueryDef {
  name: string;
  reference?: boolean;
  graphql: string;
  sql: string;
  /** Variables for one request, the same for both paths (SQL takes them positionally, in this order). */
  variables(): Record<string, string>;
  /** Refuses an answer an admin would not get (an empty overview would look fast). */
  check(data: any): boolean;
}

const since = (hours: number) => new Date(Date.now() - hours * 3_600_000).toISOString();

const QUERIES: QueryDef[] = [
  {
    name: "reference: `currentUser` (one row by key)",
    reference: true,
    graphql: "{ currentUser { rowId email isAdmin } }",
    sql: "select id, email, is_admin from app_public.users where id = app_public.current_user_id()",
    variables: () => ({}),
    check: (d) => d.currentUser?.isAdmin === true,
  },
  {
    name: "overview (`jobOverview`)",
    graphql: "{ jobOverview { queued scheduled running failed oldestDueAt oldestDueSeconds failuresLast24H workersAlive schedulerHealthy checkedAt } }",
    sql: "select * from app_public.job_overview()",
    variables: () => ({}),
    check: (d) => d.jobOverview?.queued > 0 && d.jobOverview.failuresLast24H > 0,
  },
  {
    name: "task catalogue (`allTasks`)",
    graphql: "{ allTasks { nodes { identifier queued scheduled running failed lastSucceededAt lastFailedAt } } }",
    sql: "select identifier, queued, scheduled, running, failed, last_succeeded_at, last_failed_at from app_public.tasks",
    variables: () => ({}),
    check: (d) => d.allTasks?.nodes.length >= 26 && d.allTasks.nodes.some((t: any) => t.lastFailedAt),
  },
  {
    name: "last 24 h by task and outcome: avg, max duration, counted from job_runs (`allJobRuns` groupedAggregates)",
    graphql: `query ($since: Datetime!) { allJobRuns(filter: {startedAt: {greaterThan: $since}}) {
      groupedAggregates(groupBy: [TASK_IDENTIFIER, OUTCOME]) { keys average { durationMs } max { durationMs } } } }`,
    sql: `select task_identifier, outcome, avg(duration_ms), max(duration_ms) from app_public.job_runs
          where started_at > $1 group by 1, 2`,
    variables: () => ({ since: since(24) }),
    check: (d) => d.allJobRuns?.groupedAggregates.length > 20,
  },
  {
    name: "last 24 h per hour: runs, avg duration, counted from job_runs",
    graphql: `query ($since: Datetime!) { allJobRuns(filter: {startedAt: {greaterThan: $since}}) {
      groupedAggregates(groupBy: [STARTED_AT_TRUNCATED_TO_HOUR]) { keys distinctCount { rowId } average { durationMs } } } }`,
    sql: `select date_trunc('hour', started_at), count(distinct id), avg(duration_ms) from app_public.job_runs
          where started_at > $1 group by 1`,
    variables: () => ({ since: since(24) }),
    check: (d) => d.allJobRuns?.groupedAggregates.length >= 24,
  },
  {
    name: "last hour per task: runs, avg, max duration, counted from job_runs",
    graphql: `query ($since: Datetime!) { allJobRuns(filter: {startedAt: {greaterThan: $since}}) {
      groupedAggregates(groupBy: [TASK_IDENTIFIER]) { keys distinctCount { rowId } average { durationMs } max { durationMs } } } }`,
    sql: `select task_identifier, count(distinct id), avg(duration_ms), max(duration_ms) from app_public.job_runs
          where started_at > $1 group by 1`,
    variables: () => ({ since: since(1) }),
    check: (d) => d.allJobRuns?.groupedAggregates.length > 5,
  },
  {
    name: "last 24 h by task and outcome from the rollups (`jobStats`)",
    graphql: `query ($since: Datetime!) { jobStats(since: $since) { nodes { taskIdentifier outcome runs avgDurationMs maxDurationMs } } }`,
    sql: "select * from app_public.job_stats($1)",
    variables: () => ({ since: since(24) }),
    check: (d) => d.jobStats?.nodes.length > 20,
  },
  {
    name: "runs per minute over the last hour (`jobActivity(resolution: \"minute\")`)",
    graphql: `query ($resolution: String!) { jobActivity(resolution: $resolution) { nodes { bucket runs succeeded failures avgDurationMs maxDurationMs } } }`,
    sql: "select * from app_public.job_activity($1)",
    variables: () => ({ resolution: "minute" }),
    check: (d) => d.jobActivity?.nodes.length === 60 && d.jobActivity.nodes.some((b: any) => Number(b.runs) > 0),
  },
  {
    name: "runs per hour over the last day (`jobActivity(resolution: \"hour\")`)",
    graphql: `query ($resolution: String!) { jobActivity(resolution: $resolution) { nodes { bucket runs succeeded failures avgDurationMs maxDurationMs } } }`,
    sql: "select * from app_public.job_activity($1)",
    variables: () => ({ resolution: "hour" }),
    check: (d) => d.jobActivity?.nodes.length === 24 && d.jobActivity.nodes.every((b: any) => Number(b.runs) > 0),
  },
  {
    name: "runs of one offer (`jobRunsByKeyPrefix(prefix: \"offers:<n>:\")`)",
    graphql: `query ($prefix: String!) { jobRunsByKeyPrefix(prefix: $prefix, first: 50) {
      nodes { rowId jobKey taskIdentifier outcome startedAt durationMs error } } }`,
    sql: `select id, job_key, task_identifier, outcome, started_at, duration_ms, error
          from app_public.job_runs_by_key_prefix($1) limit 50`,
    variables: () => ({ prefix: `offers:${1 + Math.floor(Math.random() * OFFERS)}:` }),
    check: (d) => Array.isArray(d.jobRunsByKeyPrefix?.nodes),
  },
  {
    name: "schedules with `nextRunAt` and `lastRun`",
    graphql: "{ allSchedules { nodes { rowId taskIdentifier pattern pausedAt nextRunAt lastRun { startedAt outcome durationMs } } } }",
    sql: `select s.id, s.task_identifier, s.pattern, s.paused_at, app_public.schedules_next_run_at(s) as next_run_at,
                 r.started_at, r.outcome, r.duration_ms
          from app_public.schedules s left join lateral app_public.schedules_last_run(s) r on true`,
    variables: () => ({}),
    check: (d) => d.allSchedules?.nodes.length >= 15 && d.allSchedules.nodes.every((s: any) => s.nextRunAt) && d.allSchedules.nodes.some((s: any) => s.lastRun),
  },
];

class Timeout extends Error {}

interface Samples {
  ms: number[];
  timeouts: number;
}

/**
 * `send` from `clients` loops at once, each sending its next request when the last one answered:
 * `warmUp` requests each, then up to `requests` timed ones or until `limitMs` ran out. The times
 * are added to `into` (several rounds of one query can share it).
 */
async function load(send: () => Promise<void>, clients: number, warmUp: number, requests: number, limitMs: number, into?: Samples): Promise<Latency> {
  const samples = into ?? { ms: [], timeouts: 0 };
  const ms = samples.ms;
  let timeouts = 0;
  let started = 0;
  let warmTimeouts = 0;
  const loop = async (stop: () => boolean, record: boolean) => {
    while (!stop()) {
      started++;
      const t0 = performance.now();
      try {
        await send();
        if (record) ms.push(performance.now() - t0);
      } catch (err) {
        if (!(err instanceof Timeout)) throw err;
        if (record) timeouts++;
        else warmTimeouts++;
      }
    }
  };
  const warm = Array.from({ length: clients }, () => {
    let n = 0;
    // One timeout is warm-up enough.
    return loop(() => n++ >= warmUp || warmTimeouts > 0, false);
  });
  await Promise.all(warm);
  started = 0;
  const deadline = performance.now() + limitMs;
  await Promise.all(Array.from({ length: clients }, () => loop(() => started >= requests || performance.now() > deadline, true)));
  samples.timeouts += timeouts;
  return latency(ms, samples.timeouts);
}

// The clients share this machine's two cores with the API and PostgreSQL, so they should cost as
// little as they can: node:http with keep-alive connections (real clients run elsewhere). In a
// scratch comparison (currentUser, 20 clients) fetch answered 15-35% fewer requests per second.
function post(agent: http.Agent, url: string, headers: Record<string, string>, body: string, retry = true): Promise<string> {
  const target = new URL(url);
  return new Promise<string>((resolve, reject) => {
    const req = http.request(
      { agent, host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers: { ...headers, "content-length": String(Buffer.byteLength(body)) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
          else resolve(text);
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  }).catch((err: NodeJS.ErrnoException) => {
    // A kept-alive connection the server closed while it sat idle between phases: once more on a new one.
    if (retry && err.code === "ECONNRESET") return post(agent, url, headers, body, false);
    throw err;
  });
}

async function graphqlRequest(agent: http.Agent, url: string, token: string, q: QueryDef) {
  const text = await post(
    agent,
    `${url}/graphql`,
    { "content-type": "application/json", authorization: `Bearer ${token}` },
    JSON.stringify({ query: q.graphql, variables: q.variables() }),
  );
  const body = JSON.parse(text) as { data?: unknown; errors?: { message: string }[] };
  if (body.errors?.some((e) => e.message.includes("took too long"))) throw new Timeout();
  if (body.errors?.length) throw new Error(`${q.name}: ${body.errors.map((e) => e.message).join("; ")}`);
  if (!q.check(body.data)) throw new Error(`${q.name}: unexpected answer ${JSON.stringify(body.data).slice(0, 300)}`);
}

/** One statement as the API runs it: a transaction as the visitor role with the admin's session. */
async function asAdmin<T>(pool: pg.Pool, visitor: string, sessionId: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query("begin");
    await c.query("select set_config('role', $1, true), set_config('hourglass.session_id', $2, true), set_config('statement_timeout', $3, true)", [
      visitor, sessionId, String(STATEMENT_TIMEOUT_MS),
    ]);
    return await fn(c);
  } catch (err) {
    if (err instanceof pg.DatabaseError && err.code === "57014") throw new Timeout();
    throw err;
  } finally {
    await c.query("commit").catch(() => {});
    c.release();
  }
}

/** The API in its own process, started as deployed (NODE_ENV=production); resolves with its URL. */
export function spawnApi(db: BenchDb, password: string, env: Record<string, string> = {}): Promise<{ url: string; pid: number; stop(): Promise<unknown> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [import.meta.filename], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        NODE_ENV: "production",
        DATABASE_URL: db.url,
        AUTHENTICATOR_PASSWORD: password,
        DATABASE_AUTHENTICATOR: db.roles.authenticator!,
        DATABASE_VISITOR: db.roles.visitor!,
        HOST: "127.0.0.1",
        PORT: "0",
        LOG_LEVEL: "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    const stop = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    };
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /READY (\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, pid: child.pid!, stop });
    });
    void exited.then((code) => reject(new Error(`the API process exited before it was ready (${code})`)));
  });
}

interface WorkerProcess {
  child: ChildProcess;
  poolId: string;
  /** host:pid:suffix, as in job_runs.worker_id. */
  label: string;
  exited: Promise<unknown>;
}

/** test/helpers/worker-process.ts as a process of its own (t_slow waits SLOW_MS, then records its n in t_done). */
function spawnWorker(db: BenchDb, password: string, env: Record<string, string>): Promise<WorkerProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [WORKER_SCRIPT], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        NODE_ENV: "production",
        DATABASE_URL: db.url,
        AUTHENTICATOR_PASSWORD: password,
        DATABASE_AUTHENTICATOR: db.roles.authenticator!,
        DATABASE_VISITOR: db.roles.visitor!,
        LOG_LEVEL: "error",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    let out = "";
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /READY (\S+) (\S+)/.exec(out);
      if (m) resolve({ child, poolId: m[1]!, label: m[2]!, exited });
    });
    void exited.then((code) => reject(new Error(`worker process exited before it was ready (${code})`)));
  });
}

export const KILLED_JOBS = 20;
export const VICTIM_CONCURRENCY = 10;

/**
 * One kill: a victim worker takes 20 jobs that would run for ten minutes (10 running, 10 in its
 * local queue); a live worker (quick jobs) starts and beats for a while; SIGKILL the victim, then
 * time until its jobs are unlocked and until each has started again on the live worker.
 */
async function recoveryRound(db: BenchDb, password: string, pool: pg.Pool, h: BenchHelpers, deadAfterMs: number, round: number): Promise<RecoveryRun> {
  const env = { WORKER_DEAD_AFTER_MS: String(deadAfterMs), WORKER_CONCURRENCY: String(VICTIM_CONCURRENCY) };
  const count = async (sql: string, params: unknown[]) => (await pool.query(sql, params)).rows[0].n as number;
  const victim = await spawnWorker(db, password, { ...env, SLOW_MS: "600000" });
  const first = round * 1000 + 1;
  let live: WorkerProcess | null = null;
  try {
    await pool.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row('t_slow', json_build_object('n', g), null, null, 5, null, null, null)::graphile_worker.job_spec
         from generate_series($1::integer, $1::integer + $2::integer - 1) g))`,
      [first, KILLED_JOBS],
    );
    // All of them locked by the victim, and its running ones in the history (its next flush).
    await h.waitFor(async () =>
      (await count("select count(*)::int as n from graphile_worker.jobs where locked_by = $1", [victim.poolId])) === KILLED_JOBS &&
      (await count("select count(*)::int as n from app_public.job_runs where worker_id = $1 and outcome = 'running'", [victim.label])) === VICTIM_CONCURRENCY,
    );
    live = await spawnWorker(db, password, { ...env, SLOW_MS: "50" });
    // A live worker judges others only once it has itself beaten without a gap for dead_after;
    // it is enough that it beats since before the victim's last beat (checked below), as a
    // long-running peer would: the victim counts as dead no earlier than that. Its recovery loop
    // runs every third of dead_after from its start: the kill falls at a random point of that
    // cycle, as it would in production, rather than always at the same one.
    await sleep(Math.max(2000, deadAfterMs / 6 + 1000) + Math.random() * (deadAfterMs / 3));
    const { rows: orphans } = await pool.query<{ id: string }>("select id from graphile_worker.jobs where locked_by = $1", [victim.poolId]);
    const killedAt = Date.now();
    victim.child.kill("SIGKILL");
    await victim.exited;
    const { rows: beats } = await pool.query<{ victim: number; live: number }>(
      `select (select extract(epoch from last_seen_at) * 1000 from app_public.worker_processes where id = $1)::float8 as victim,
              (select extract(epoch from beating_since) * 1000 from app_public.worker_processes where id = $2)::float8 as live`,
      [victim.poolId, live.poolId],
    );
    if (!(beats[0]!.live <= beats[0]!.victim)) throw new Error("the live worker had not beaten since before the victim's last beat");
    let releasedAt = 0;
    await h.waitFor(async () => {
      if ((await count("select count(*)::int as n from graphile_worker.jobs where locked_by = $1", [victim.poolId])) > 0) return false;
      releasedAt ||= Date.now();
      return true;
    }, 2 * deadAfterMs + 30_000);
    const ids = orphans.map((o) => o.id);
    await h.waitFor(async () =>
      (await count("select count(distinct job_id)::int as n from app_public.job_runs where job_id = any($1::bigint[]) and worker_id = $2 and outcome = 'succeeded'", [ids, live!.label])) === ids.length,
    );
    const { rows: starts } = await pool.query<{ ms: number }>(
      `select (extract(epoch from min(started_at)) * 1000)::float8 - $3 as ms from app_public.job_runs
       where job_id = any($1::bigint[]) and worker_id = $2 group by job_id`,
      [ids, live.label, killedAt],
    );
    const ms = starts.map((s) => s.ms);
    return {
      deadAfterMs,
      orphans: ids.length,
      abandoned: await count("select count(*)::int as n from app_public.job_runs where worker_id = $1 and outcome = 'abandoned'", [victim.label]),
      lastBeatMs: Math.round(killedAt - beats[0]!.victim),
      releasedMs: releasedAt - killedAt,
      firstMs: Math.min(...ms),
      allMs: Math.max(...ms),
    };
  } finally {
    if (victim.child.exitCode === null && victim.child.signalCode === null) victim.child.kill("SIGKILL");
    if (live) {
      live.child.kill("SIGTERM");
      await live.exited;
    }
  }
}

/** Kills in turn, `rounds` for each WORKER_DEAD_AFTER_MS, all workers with the same setting. */
export async function recoveryRuns(db: BenchDb, password: string, h: BenchHelpers, plan: { deadAfterMs: number; rounds: number }[]): Promise<RecoveryRun[]> {
  const owner = new pg.Pool({ connectionString: db.url, max: 2 });
  const runs: RecoveryRun[] = [];
  try {
    await owner.query(`
      delete from app_public.worker_processes;
      insert into app_private.tasks (identifier, description, priority, max_attempts, time_limit_ms) values ('t_slow', 'bench', 0, 5, 60000);
      create table public.t_done (n integer primary key, worker text not null, runs integer not null default 1, at timestamptz not null default clock_timestamp());`);
    let round = 0;
    for (const { deadAfterMs, rounds } of plan) {
      for (let i = 0; i < rounds; i++) {
        const r = await recoveryRound(db, password, owner, h, deadAfterMs, ++round);
        runs.push(r);
        console.log(
          `  WORKER_DEAD_AFTER_MS=${deadAfterMs} kill ${i + 1}: ${r.orphans} orphans (${r.abandoned} abandoned runs), last beat ${r.lastBeatMs} ms before; ` +
            `released after ${(r.releasedMs / 1000).toFixed(2)} s, first running again ${(r.firstMs / 1000).toFixed(2)} s, all ${(r.allMs / 1000).toFixed(2)} s`,
        );
      }
    }
  } finally {
    await owner.end();
  }
  return runs;
}

/**
 * Every query alone, then at CLIENTS clients, through GraphQL (an API process started here) and in
 * SQL, as the admin whose session is given; the plans of those that miss the goal.
 */
export async function queryFigures(db: BenchDb, password: string, admin: { token: string; sessionId: string }) {
  const authPool = new pg.Pool({ connectionString: withCredentials(db.url, db.roles.authenticator!, password), max: CLIENTS });
  const api = await spawnApi(db, password);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  const visitor = db.roles.visitor!;
  const queries: QueryFigures[] = [];
  const plans = new Map<string, string[]>();
  const fmt = (l: Latency) => (l.n || l.timeouts ? `p50 ${l.p50.toFixed(1)} ms, p95 ${l.p95.toFixed(1)} ms (n ${l.n}${l.timeouts ? `, ${l.timeouts} timed out` : ""})` : "not run");
  const fmtAlone = (l: Latency) => (l.timeouts ? `timed out alone (${l.n} answered)` : `alone p50 ${l.p50.toFixed(1)} ms`);
  try {
    const paths = QUERIES.map((q) => {
      const p = {
        q,
        /** GraphQL requests finished, warm-up and timed-out ones too: what the CPU account divides by. */
        graphqlDone: 0,
        viaGraphql: async () => {
          try {
            await graphqlRequest(agent, api.url, admin.token, q);
          } finally {
            p.graphqlDone++;
          }
        },
        viaSql: () =>
          asAdmin(authPool, visitor, admin.sessionId, async (c) => {
            const { rows } = await c.query(q.sql, Object.values(q.variables()));
            if (q.name.startsWith("overview") && !rows[0]?.queued) throw new Error("the overview is empty: not seen as an admin");
          }),
        graphqlSamples: { ms: [], timeouts: 0 } as Samples,
        sqlSamples: { ms: [], timeouts: 0 } as Samples,
        cpu: new CpuAccount(),
      };
      return p;
    });
    // Alone first (its warm-up serves both paths' loaded rounds).
    const alone = new Map<string, { graphql: Latency; sql: Latency }>();
    for (const p of paths) {
      alone.set(p.q.name, {
        graphql: await load(p.viaGraphql, 1, 2, SINGLE_REQUESTS, SINGLE_LIMIT_MS),
        sql: await load(p.viaSql, 1, 2, SINGLE_REQUESTS, SINGLE_LIMIT_MS),
      });
    }
    // At CLIENTS clients, in rounds that take turns; only what answered in time alone.
    for (let round = 0; round < ROUNDS; round++) {
      for (const p of paths) {
        const a = alone.get(p.q.name)!;
        if (!a.graphql.timeouts) {
          const doneBefore = p.graphqlDone;
          await p.cpu.measure(
            api.pid,
            () => load(p.viaGraphql, CLIENTS, LOADED_WARM_UP, REQUESTS / ROUNDS, ROUND_LIMIT_MS, p.graphqlSamples),
            () => p.graphqlDone - doneBefore,
          );
        }
        if (!a.sql.timeouts) await load(p.viaSql, CLIENTS, LOADED_WARM_UP, REQUESTS / ROUNDS, ROUND_LIMIT_MS, p.sqlSamples);
      }
    }
    for (const p of paths) {
      const q = p.q;
      const { graphql: graphqlAlone, sql: sqlAlone } = alone.get(q.name)!;
      const graphql = latency(p.graphqlSamples.ms, p.graphqlSamples.timeouts);
      const sql = latency(p.sqlSamples.ms, p.sqlSamples.timeouts);
      const cpu = p.cpu.perRequest();
      queries.push({ name: q.name, reference: q.reference ?? false, graphqlAlone, graphql, sqlAlone, sql, cpu });
      const cpuText = `API ${cpu.api.toFixed(2)}, PostgreSQL ${cpu.postgres?.toFixed(2) ?? "(not on this machine)"}, clients ${cpu.clients.toFixed(2)} ms CPU per request; steal ${cpu.stealPercent.toFixed(1)}%`;
      console.log(`  ${q.name}\n    GraphQL ${fmt(graphql)}; ${fmtAlone(graphqlAlone)}\n      ${cpuText}\n    SQL ${fmt(sql)}; ${fmtAlone(sqlAlone)}`);
      if (!q.reference && !(graphql.p95 <= GOAL_P95_MS)) {
        // Executed (one minute allowed) unless it timed out alone: then the plan alone.
        const explain = sqlAlone.timeouts ? "explain (costs off)" : "explain (analyze, buffers, costs off)";
        const plan = await asAdmin(authPool, visitor, admin.sessionId, async (c) => {
          await c.query("select set_config('statement_timeout', '60000', true)");
          return c.query(`${explain} ${q.sql}`, Object.values(q.variables()));
        });
        plans.set(q.name, [`${explain} ${q.sql.replace(/\s+/g, " ")}`, ...plan.rows.map((r) => r["QUERY PLAN"] as string)]);
      }
    }
  } finally {
    agent.destroy();
    await api.stop();
    await authPool.end();
  }
  return { queries, plans };
}

/**
 * The overview from CLIENTS clients through one API per POOL_SIZES entry (all started at once;
 * idle ones cost nothing), in ROUNDS rounds that take turns, as the queries above do.
 */
export async function poolFigures(db: BenchDb, password: string, admin: { token: string }): Promise<{ size: number; graphql: Latency }[]> {
  const overview = QUERIES.find((q) => q.name.startsWith("overview"))!;
  const apis = await Promise.all(POOL_SIZES.map((size) => spawnApi(db, password, { API_POOL_SIZE: String(size) })));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  try {
    const runs = apis.map((api, i) => ({
      size: POOL_SIZES[i]!,
      send: () => graphqlRequest(agent, api.url, admin.token, overview),
      samples: { ms: [], timeouts: 0 } as Samples,
    }));
    for (let round = 0; round < ROUNDS; round++) {
      for (const r of runs) await load(r.send, CLIENTS, LOADED_WARM_UP, REQUESTS / ROUNDS, ROUND_LIMIT_MS, r.samples);
    }
    return runs.map((r) => {
      const graphql = latency(r.samples.ms, r.samples.timeouts);
      console.log(`  overview through a pool of ${r.size}: p50 ${graphql.p50.toFixed(1)} ms, p95 ${graphql.p95.toFixed(1)} ms (n ${graphql.n})`);
      return { size: r.size, graphql };
    });
  } finally {
    agent.destroy();
    await Promise.all(apis.map((a) => a.stop()));
  }
}

export async function controlBench(serverUrl: string, h: BenchHelpers, recovery: { deadAfterMs: number; rounds: number }[]): Promise<ControlFigures> {
  const tasks = await loadTasks();
  const db = await h.benchDatabase(serverUrl, "hg_bench_control", tasks);
  // benchDatabase keeps the authenticator's password to itself: set one the API can log in with.
  const password = randomBytes(12).toString("hex");
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    await client.query(`alter role ${client.escapeIdentifier(db.roles.authenticator!)} password ${client.escapeLiteral(password)}`);
    const started = performance.now();
    await loadHistory(client);
    // Loaded by hand, not by history writers: the rollups are rebuilt as a DBA would.
    await client.query("select app_private.rebuild_job_rollups()");
    await loadQueue(client);
    await client.query("vacuum analyze");
    const loadSeconds = (performance.now() - started) / 1000;
    const { rows: facts } = await client.query(
      `select (select count(*) from app_public.job_runs)::int as runs, (select count(*) from graphile_worker.jobs)::int as jobs,
              (select count(*) from app_private.tasks)::int as tasks, (select count(*) from app_public.schedules)::int as schedules`,
    );
    console.log(`  loaded ${facts[0].runs} history rows, ${facts[0].jobs} queued jobs in ${loadSeconds.toFixed(0)} s`);

    const { rows: u } = await client.query<{ id: string }>("insert into app_public.users (email, is_admin) values ('admin@example.com', true) returning id::text");
    const { rows: t } = await client.query<{ token: string }>("select app_private.create_session($1, interval '1 day') as token", [u[0]!.id]);
    const token = t[0]!.token;
    const { rows: s } = await client.query<{ id: string }>("select id from app_private.sessions where token_hash = sha256(convert_to($1, 'UTF8'))", [token]);
    const { queries, plans } = await queryFigures(db, password, { token, sessionId: s[0]!.id });
    const pools = await poolFigures(db, password, { token });

    // Crash recovery, on the same database (its worker processes run only their own task).
    return {
      historyRows: facts[0].runs, queueJobs: facts[0].jobs, tasks: facts[0].tasks, schedules: facts[0].schedules,
      loadSeconds, queries, plans, pools, recovery: await recoveryRuns(db, password, h, recovery),
    };
  } finally {
    await client.end();
    await h.dropBenchDatabase(serverUrl, db.name, db.roles);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const config = loadConfig(process.env);
  const log = createLogger(config.log);
  // After loadConfig: GRAPHILE_ENV follows NODE_ENV, and Grafast reads it when first imported.
  const { startApi } = await import("../../src/api/server.ts");
  const api = await startApi({
    authUrl: withCredentials(config.databaseUrl!, config.roles.authenticator, config.authenticatorPassword!),
    config,
    log,
    health: { workerRunning: () => null },
  });
  console.log(`READY ${api.url}`);
  process.on("SIGTERM", () => void api.stop().finally(() => process.exit(0)));
}
