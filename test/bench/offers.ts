// Offers benchmarks for `npm run bench` (section 6): how late offers expire, what the scheduling
// triggers cost a bulk statement, and what the overdue sweep costs on a large table.
import pg from "pg";
import { loadConfig } from "../../src/config.ts";
import type { Logger } from "../../src/log.ts";
import { createPool } from "../../src/db/pool.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { startWorker } from "../../src/worker/runner.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";

export interface BenchDb {
  name: string;
  url: string;
  roles: Record<string, string>;
}
export interface BenchHelpers {
  log: Logger;
  benchDatabase(serverUrl: string, prefix: string, tasks: ResolvedTask[]): Promise<BenchDb>;
  dropBenchDatabase(serverUrl: string, name: string, roles: Record<string, string>): Promise<void>;
  median(xs: number[]): number;
  waitFor(check: () => Promise<boolean>, timeoutMs?: number): Promise<void>;
}

export interface Lateness {
  n: number;
  p50: number;
  p99: number;
  max: number;
}
/** All offers, and those due from 2 s after the first (the worker's connections warmed up). */
export interface LatenessRun {
  all: Lateness;
  warm: Lateness;
}

/** p50, p99 and max of a set of durations. */
export function lateness(ms: number[]): Lateness {
  const sorted = [...ms].sort((a, b) => a - b);
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1)! };
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

/** A company with one job and `n` applications from workers without a linked user (nobody to notify). */
async function seedDrafts(pool: pg.Pool, n: number) {
  await pool.query(
    `with c as (insert into app_public.companies (name) values ('Bench') returning id),
          j as (insert into app_public.jobs (company_id, title) select id, 'Bench job' from c returning id),
          w as (insert into app_public.workers (name) select 'w' || g from generate_series(1, $1) g returning id),
          a as (insert into app_public.job_applications (job_id, worker_id) select j.id, w.id from j, w returning id)
     insert into app_public.offers (application_id, start_date, end_date)
     select a.id, '2030-01-01', '2030-01-31' from a`,
    [n],
  );
}

/**
 * 6a. 10,000 offers sent with expires_at spread evenly over 60 seconds (starting 5 s out, while a
 * worker with the shipped defaults starts); lateness = when the EXPIRED update committed (a
 * bench-only trigger records clock_timestamp()) minus expires_at.
 */
export async function expiryLateness(serverUrl: string, h: BenchHelpers, exactWake: boolean, offers = 10_000): Promise<LatenessRun> {
  const tasks = await loadTasks();
  const db = await h.benchDatabase(serverUrl, "hg_bench_expiry", tasks);
  const pool = createPool(db.url, { max: 2, name: "bench" }, h.log);
  try {
    await seedDrafts(pool, offers);
    await pool.query(`
      create table public.bench_expired (id bigint primary key, at timestamptz not null);
      create function public.bench_record_expiry() returns trigger language plpgsql as $$
      begin
        insert into public.bench_expired (id, at)
        select n.id, clock_timestamp() from new_rows n join old_rows o on o.id = n.id
        where n.status = 'EXPIRED' and o.status <> 'EXPIRED';
        return null;
      end $$;
      create trigger _999_bench after update on app_public.offers referencing old table as old_rows new table as new_rows
        for each statement execute procedure public.bench_record_expiry();`);
    await pool.query(
      `update app_public.offers set status = 'SENT',
         expires_at = now() + interval '5 seconds' + (id % $1) * (interval '60 seconds' / $1)`,
      [offers],
    );
    const config = loadConfig({
      NODE_ENV: "production", DATABASE_URL: db.url, AUTHENTICATOR_PASSWORD: "x", LOG_LEVEL: "warn",
      WORKER_EXACT_WAKE: String(exactWake),
    });
    const worker = await startWorker({ ownerUrl: db.url, config, tasks, log: h.log, crontabFile: null });
    try {
      await h.waitFor(async () => {
        const { rows } = await pool.query("select count(*)::int as n from public.bench_expired");
        return rows[0].n >= offers;
      }, 180_000);
    } finally {
      await worker.stop();
    }
    const { rows } = await pool.query<{ ms: number; warm: boolean }>(
      `select extract(epoch from b.at - o.expires_at) * 1000 as ms,
              o.expires_at >= min(o.expires_at) over () + interval '2 seconds' as warm
       from public.bench_expired b join app_public.offers o on o.id = b.id`,
    );
    return { all: lateness(rows.map((r) => Number(r.ms))), warm: lateness(rows.filter((r) => r.warm).map((r) => Number(r.ms))) };
  } finally {
    await pool.end();
    await h.dropBenchDatabase(serverUrl, db.name, db.roles);
  }
}

export interface TriggerCost {
  rows: number;
  tableRows: number;
  bare: number[];
  rulesOnly: number[];
  all: number[];
  /** graphile_worker.add_jobs alone with the same 100,000 keyed jobs: the floor of what scheduling costs. */
  addJobsOnly: number[];
  /** The reference conditions: 10,000 rows spread over the table. */
  spreadRows: number;
  spreadBare: number[];
  spreadAll: number[];
}
export interface SweepCost {
  overdue: number;
  batchMs: number[];
  totalMs: number;
  plan: string[];
}

/**
 * 6b and 6c on one table of 1,000,000 offers: 100,000 drafts, 10,000 SENT and overdue with no job
 * (1%), 90,000 SENT and due later, 800,000 expired.
 */
export async function bulkCosts(serverUrl: string, h: BenchHelpers, rounds: number): Promise<{ trigger: TriggerCost; sweep: SweepCost }> {
  const tasks = await loadTasks();
  const db = await h.benchDatabase(serverUrl, "hg_bench_bulk", tasks);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const DRAFTS = 100_000;
  const TOTAL = 1_000_000;
  const OVERDUE = 10_000;
  try {
    // Loaded with the offers triggers off (as a restore would), so the load itself enqueues nothing.
    await client.query(
      `with c as (insert into app_public.companies (name) values ('Bench') returning id),
            j as (insert into app_public.jobs (company_id, title) select id, 'Bench job' from c returning id)
       insert into app_public.workers (name) select 'w' || g from generate_series(1, $1) g`,
      [TOTAL],
    );
    await client.query(
      `insert into app_public.job_applications (job_id, worker_id) select (select min(id) from app_public.jobs), id from app_public.workers`,
    );
    await client.query("alter table app_public.offers disable trigger user");
    await client.query(
      `insert into app_public.offers (application_id, company_id, worker_id, start_date, end_date, status, sent_at, expires_at, expired_at)
       select a.id, j.company_id, a.worker_id, '2030-01-01', '2030-01-31',
              case when a.id <= $1 then 'DRAFT' when a.id <= $1 + $2 then 'SENT' when a.id <= 2 * $1 then 'SENT' else 'EXPIRED' end,
              case when a.id > $1 then now() - interval '10 days' end,
              case when a.id <= $1 then null when a.id <= $1 + $2 then now() - interval '1 hour' - a.id * interval '1 second'
                   when a.id <= 2 * $1 then now() + interval '3 days' else now() - interval '3 days' end,
              case when a.id > 2 * $1 then now() - interval '3 days' end
       from app_public.job_applications a join app_public.jobs j on j.id = a.job_id`,
      [DRAFTS, OVERDUE],
    );
    await client.query("alter table app_public.offers enable trigger user");
    await client.query("vacuum analyze");

    const send = "update app_public.offers set status = 'SENT' where status = 'DRAFT'";
    const sendBare = "update app_public.offers set status = 'SENT', sent_at = now(), expires_at = now() + interval '7 days' where status = 'DRAFT'";
    const addJobsOnly = `select count(*) as n from graphile_worker.add_jobs(array(
      select row('offers__expire', json_build_object('id', o.id), null, now() + interval '7 days', 25,
                 'offers:' || o.id || ':expire', 0, null)::graphile_worker.job_spec
      from app_public.offers o where o.status = 'DRAFT'))`;
    const timed = async (setup: string | null, sql: string, expected = DRAFTS) => {
      await client.query("begin");
      if (setup) await client.query(setup);
      const started = performance.now();
      const r = await client.query(sql);
      const ms = performance.now() - started;
      await client.query("rollback");
      const n = r.command === "SELECT" ? Number(r.rows[0].n) : r.rowCount;
      if (n !== expected) throw new Error(`expected ${expected} rows, got ${n}`);
      // Every table, graphile-worker's jobs included: each rolled-back send leaves 100,000 dead
      // job rows, and add_jobs scans that table for keys to clear (this machine's server runs
      // without autovacuum).
      await client.query("vacuum");
      return ms;
    };
    const SPREAD = DRAFTS / 10;
    const trigger: TriggerCost = { rows: DRAFTS, tableRows: TOTAL, bare: [], rulesOnly: [], all: [], addJobsOnly: [], spreadRows: SPREAD, spreadBare: [], spreadAll: [] };
    for (let round = 0; round < rounds; round++) {
      // Alternate the order so that drift in the machine falls on every variant alike.
      const variants = [
        async () => trigger.all.push(await timed(null, send)),
        async () => trigger.bare.push(await timed("alter table app_public.offers disable trigger user", sendBare)),
        async () => trigger.rulesOnly.push(await timed("alter table app_public.offers disable trigger _500_after_update", send)),
        async () => trigger.addJobsOnly.push(await timed(null, addJobsOnly)),
      ];
      for (const v of round % 2 ? variants.reverse() : variants) await v();
      const spread = " and id % 10 = 0";
      const spreadVariants = [
        async () => trigger.spreadAll.push(await timed(null, send + spread, SPREAD)),
        async () => trigger.spreadBare.push(await timed("alter table app_public.offers disable trigger user", sendBare + spread, SPREAD)),
      ];
      for (const v of round % 2 ? spreadVariants.reverse() : spreadVariants) await v();
      console.log(
        `  round ${round + 1}: all triggers ${trigger.all.at(-1)!.toFixed(0)} ms, row rules only ${trigger.rulesOnly.at(-1)!.toFixed(0)} ms, add_jobs alone ${trigger.addJobsOnly.at(-1)!.toFixed(0)} ms, no triggers ${trigger.bare.at(-1)!.toFixed(0)} ms; 10,000 spread rows: ${trigger.spreadAll.at(-1)!.toFixed(0)} / ${trigger.spreadBare.at(-1)!.toFixed(0)} ms`,
      );
    }

    const { rows: plan } = await client.query(
      `explain (analyze, buffers, costs off, timing off)
       select d.id from app_public.offers d where d.status = 'SENT' and d.expires_at <= now() order by d.expires_at limit 1000`,
    );
    const sweep: SweepCost = { overdue: OVERDUE, batchMs: [], totalMs: 0, plan: plan.map((r) => r["QUERY PLAN"] as string) };
    const started = performance.now();
    for (;;) {
      const t = performance.now();
      const { rows } = await client.query("select expired, remaining from app_private.sweep_overdue_offers(1000)");
      sweep.batchMs.push(performance.now() - t);
      if (rows[0].expired < 1000) break;
    }
    sweep.totalMs = performance.now() - started;
    const { rows: left } = await client.query("select count(*)::int as n from app_public.offers where status = 'SENT' and expires_at <= now()");
    if (left[0].n !== 0) throw new Error(`the sweep left ${left[0].n} overdue offers`);
    return { trigger, sweep };
  } finally {
    await client.end();
    await h.dropBenchDatabase(serverUrl, db.name, db.roles);
  }
}
