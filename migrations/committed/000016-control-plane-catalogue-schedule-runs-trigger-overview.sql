--! Previous: sha1:c143605bc3fa5e12bec00c327d6ecd933e1cd7d1
--! Hash: sha1:d9a9bdff954499e0b6717432de5cc2df1d0c848b
--! Message: control plane: catalogue, schedule runs, trigger, overview

-- The rest of the control plane, for admins in SQL and GraphQL. Why: the source systems' task API
-- listed every task with its defaults and state, showed each schedule's next and last run, ran a
-- task or a schedule now, and answered a scheduler health check; graphile-worker has none of it.
-- * app_public.tasks: the catalogue (description, priority, max attempts, soft and hard time
--   limits, payload schema, crontab entries) with queue counts and last success/failure.
-- * Schedules gain their payload (for run-now), next_run_at (computed from the pattern, UTC) and
--   last_run (the latest history row of the entry's jobs, key cron:<id>).
-- * run_schedule and trigger_task enqueue now, audited; unknown task TKNFD, non-object payload TKPAY
--   (the API also checks the payload against the task's schema before calling trigger_task).
-- * job_overview: the facts an operator and /healthz need, without reading any _private_ table.
-- * Indexes on the history so that "last run of this schedule", "runs of offer 42" and "last
--   failure of this task" do not walk a million rows.

drop function if exists app_public.job_overview(interval);
drop function if exists app_hidden.job_health(interval);
drop type if exists app_public.job_overview;
drop function if exists app_public.trigger_task(text, json, text);
drop function if exists app_public.run_schedule(text, text);
drop function if exists app_public.schedules_last_run(app_public.schedules);
drop function if exists app_public.schedules_next_run_at(app_public.schedules);
drop function if exists app_hidden.cron_next_run(text, timestamptz);
drop function if exists app_hidden.cron_values(text, integer, integer);
drop view if exists app_public.tasks;
drop index if exists app_public.job_runs_key_started_idx;
drop index if exists app_public.job_runs_task_failed_idx;
drop index if exists app_public.job_runs_job_id_idx;
alter table app_public.schedules drop column if exists payload;
alter table app_private.tasks drop column if exists soft_time_limit_ms;
alter table app_private.tasks drop column if exists payload_schema;

--------------------------------------------------------------------------------------------
-- A job's state, defined once: the admin queue view (app_public.queued_jobs, from 000013), the
-- overview and /metrics all read it. Create-or-replace (not drop): queued_jobs depends on it.

create or replace view app_private.job_states as
  select j.id, j.task_identifier, j.queue_name, j.key, j.priority, j.run_at, j.attempts, j.max_attempts,
         j.last_error, j.locked_at, j.locked_by, j.created_at, j.updated_at,
         case
           when j.locked_at is not null and j.locked_at > now() - interval '4 hours' then 'running'
           when j.attempts >= j.max_attempts then 'failed'
           when j.run_at > now() then 'scheduled'
           else 'queued'
         end as state
  from graphile_worker.jobs j;
comment on view app_private.job_states is E'graphile-worker''s public jobs view with each job''s state: queued (due), scheduled (run_at in the future), running (locked by a worker within four hours), failed (out of attempts). No access check: app_public.queued_jobs is the admins'' view of it.';

create or replace view app_public.queued_jobs with (security_barrier) as
  select * from app_private.job_states where app_hidden.current_user_is_admin();

--------------------------------------------------------------------------------------------
-- Catalogue: soft time limits and payload schemas

alter table app_private.tasks
  add column soft_time_limit_ms integer check (soft_time_limit_ms > 0),
  add column payload_schema jsonb;
comment on column app_private.tasks.soft_time_limit_ms is E'When the task''s abort signal fires (it should wind down); time_limit_ms is when the attempt fails as timed_out.';
comment on column app_private.tasks.payload_schema is E'JSON Schema of the payload the task accepts (from its zod schema), for clients building a trigger form.';

-- History lookups by key (a schedule's runs are cron:<id>; a record's runs share a prefix such as
-- offers:42:) and a task's latest failure. Both partial: most runs have no key and succeed.
create index job_runs_key_started_idx on app_public.job_runs (job_key text_pattern_ops, started_at desc) where job_key is not null;
create index job_runs_task_failed_idx on app_public.job_runs (task_identifier, started_at desc)
  where outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned');
-- A job's attempts (job ids only grow, so this index appends at its right edge).
create index job_runs_job_id_idx on app_public.job_runs (job_id);
-- History aggregates by outcome and filters by outcome and key: the partial indexes above serve
-- them, which PostGraphile does not see on its own.
comment on column app_public.job_runs.outcome is E'@behavior +attribute:groupBy +filterBy +orderBy\nrunning, succeeded, failed_retrying (will run again), failed_permanently (out of attempts or invalid), skipped (nothing to do), abandoned (its worker stopped), timed_out (exceeded the task''s hard time limit, or stopped because of its soft one).';
comment on column app_public.job_runs.job_key is E'@behavior +filterBy\nThe job''s key, e.g. offers:42:expire; filter by prefix (startsWith) to find the runs of one record.';

create view app_public.tasks with (security_barrier) as
  select t.identifier, t.description, t.priority, t.max_attempts, t.soft_time_limit_ms, t.time_limit_ms, t.payload_schema,
         coalesce((select array_agg(s.id order by s.id) from app_public.schedules s where s.task_identifier = t.identifier), '{}') as schedule_ids,
         coalesce(q.queued, 0) as queued, coalesce(q.scheduled, 0) as scheduled,
         coalesce(q.running, 0) as running, coalesce(q.failed, 0) as failed,
         q.oldest_due_at,
         (select r.finished_at from app_public.job_runs r
          where r.task_identifier = t.identifier and r.outcome = 'succeeded'
          order by r.started_at desc limit 1) as last_succeeded_at,
         f.finished_at as last_failed_at, f.error as last_error,
         t.synced_at
  from app_private.tasks t
  left join (
    select j.task_identifier,
           count(*) filter (where j.state = 'queued')::integer as queued,
           count(*) filter (where j.state = 'scheduled')::integer as scheduled,
           count(*) filter (where j.state = 'running')::integer as running,
           count(*) filter (where j.state = 'failed')::integer as failed,
           min(j.run_at) filter (where j.state = 'queued') as oldest_due_at
    from app_private.job_states j
    group by j.task_identifier
  ) q on q.task_identifier = t.identifier
  left join lateral (
    select r.finished_at, r.error from app_public.job_runs r
    where r.task_identifier = t.identifier and r.outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned')
    order by r.started_at desc limit 1
  ) f on true
  where app_hidden.current_user_is_admin();
grant select on app_public.tasks to :DATABASE_VISITOR;
comment on view app_public.tasks is E'@primaryKey identifier\nEvery task the workers know, with its declared defaults, the crontab entries that run it, its jobs in the queue by state, and its last success and failure. Admins only; others see no rows.';
comment on column app_public.tasks.soft_time_limit_ms is E'After this long the task''s abort signal fires.';
comment on column app_public.tasks.time_limit_ms is E'After this long the attempt fails as timed_out and is retried.';
comment on column app_public.tasks.payload_schema is E'JSON Schema of the payload (triggerTask checks it).';
comment on column app_public.tasks.schedule_ids is E'The crontab entries (schedules) that run this task.';
comment on column app_public.tasks.queued is E'Jobs due now and waiting for a worker.';
comment on column app_public.tasks.scheduled is E'Jobs whose run_at is in the future.';
comment on column app_public.tasks.running is E'Jobs a worker is running.';
comment on column app_public.tasks.failed is E'Jobs out of attempts (retry or cancel them).';
comment on column app_public.tasks.oldest_due_at is E'run_at of the longest-waiting due job.';
comment on column app_public.tasks.last_error is E'The error of the last failed run.';

--------------------------------------------------------------------------------------------
-- Schedules: payload, next run (from the pattern), last run (from the history), run now

alter table app_public.schedules add column payload jsonb;
comment on column app_public.schedules.payload is E'The entry''s payload (the {...} at the end of its crontab line), if any.';

create or replace function app_private.sync_schedules(entries jsonb) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.schedules (id, pattern, task_identifier, options, payload, synced_at)
  select e->>'id', e->>'pattern', e->>'task', coalesce(e->'options', '{}'), nullif(e->'payload', 'null'::jsonb), now()
  from jsonb_array_elements(entries) e
  on conflict (id) do update set pattern = excluded.pattern, task_identifier = excluded.task_identifier,
    options = excluded.options, payload = excluded.payload, synced_at = now();
$$;

-- The values one crontab field allows, as graphile-worker reads it: n, a-b, * and */n, comma
-- separated; day-of-week 7 is Sunday.
create function app_hidden.cron_values(field text, lo integer, hi integer) returns integer[]
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_part text;
  v_m text[];
  v_values integer[] := '{}';
begin
  foreach v_part in array string_to_array(field, ',') loop
    if v_part ~ '^[0-9]+$' then
      v_values := v_values || v_part::integer;
      continue;
    end if;
    v_m := regexp_match(v_part, '^([0-9]+)-([0-9]+)$');
    if v_m is not null then
      v_values := v_values || array(select generate_series(v_m[1]::integer, v_m[2]::integer));
      continue;
    end if;
    v_m := regexp_match(v_part, '^\*(?:/([1-9][0-9]*))?$');
    if v_m is not null then
      v_values := v_values || array(select generate_series(lo, hi, coalesce(v_m[1]::integer, 1)));
      continue;
    end if;
    raise exception 'Unsupported crontab field %', field using errcode = 'CRONP';
  end loop;
  if hi = 6 then
    v_values := array(select case when x = 7 then 0 else x end from unnest(v_values) x);
  end if;
  if exists (select 1 from unnest(v_values) x where x < lo or x > hi) then
    raise exception 'Crontab field % is outside %-%', field, lo, hi using errcode = 'CRONP';
  end if;
  return array(select distinct x from unnest(v_values) x order by x);
end;
$$;

create function app_hidden.cron_next_run(pattern text, after timestamptz) returns timestamptz
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_f text[] := regexp_split_to_array(btrim(pattern), '\s+');
  v_minutes integer[];
  v_hours integer[];
  v_dates integer[];
  v_months integer[];
  v_dows integer[];
  v_any_date boolean;
  v_any_dow boolean;
  v_start timestamp := date_trunc('minute', after at time zone 'UTC') + interval '1 minute';
  v_day date;
  v_hour integer;
  v_minute integer;
  v_at timestamp;
begin
  if cardinality(v_f) <> 5 then
    raise exception 'A crontab pattern has five fields, not %', pattern using errcode = 'CRONP';
  end if;
  v_minutes := app_hidden.cron_values(v_f[1], 0, 59);
  v_hours := app_hidden.cron_values(v_f[2], 0, 23);
  v_dates := app_hidden.cron_values(v_f[3], 1, 31);
  v_months := app_hidden.cron_values(v_f[4], 1, 12);
  v_dows := app_hidden.cron_values(v_f[5], 0, 6);
  v_any_date := cardinality(v_dates) = 31;
  v_any_dow := cardinality(v_dows) = 7;
  -- Day by day (at most eight years: 29 February after a skipped leap year), then the first
  -- hour and minute of a matching day at or after the start. Like cron and graphile-worker:
  -- when both day fields are restricted, either may match.
  for i in 0 .. 366 * 8 loop
    v_day := v_start::date + i;
    continue when not extract(month from v_day)::integer = any (v_months);
    continue when not case
      when not v_any_date and not v_any_dow then extract(day from v_day)::integer = any (v_dates) or extract(dow from v_day)::integer = any (v_dows)
      when not v_any_date then extract(day from v_day)::integer = any (v_dates)
      when not v_any_dow then extract(dow from v_day)::integer = any (v_dows)
      else true
    end;
    foreach v_hour in array v_hours loop
      foreach v_minute in array v_minutes loop
        v_at := v_day + make_interval(hours => v_hour, mins => v_minute);
        if v_at >= v_start then
          return v_at at time zone 'UTC';
        end if;
      end loop;
    end loop;
  end loop;
  return null;
end;
$$;
comment on function app_hidden.cron_next_run(text, timestamptz) is E'The first minute after `after` that a five-field crontab pattern (UTC) matches, or null if none within eight years.';

create function app_public.schedules_next_run_at(s app_public.schedules) returns timestamptz
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.cron_next_run(s.pattern, now());
$$;
comment on function app_public.schedules_next_run_at(app_public.schedules) is E'The entry''s next tick (UTC). While the entry is paused that tick is skipped.';

create function app_public.schedules_last_run(s app_public.schedules) returns app_public.job_runs
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select r.* from app_public.job_runs r
  where r.job_key = 'cron:' || s.id
  order by r.started_at desc
  limit 1;
$$;
comment on function app_public.schedules_last_run(app_public.schedules) is E'The latest run of the entry''s jobs (a tick or a run-now): when, how long, and how it ended (skipped while paused).';

create function app_public.run_schedule(schedule_id text, reason text default null) returns app_public.queued_jobs
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_schedule app_public.schedules;
  v_job_id bigint;
  v_job app_public.queued_jobs;
begin
  select * into v_schedule from app_public.schedules s where s.id = schedule_id;
  if not found then
    raise exception 'No schedule %', schedule_id using errcode = 'SCNFD';
  end if;
  -- Under the entry's key, so a tick still waiting in the queue runs once, now; without the
  -- _cron marker, so it runs even while the entry is paused (the admin asked for it).
  v_job_id := app_private.add_job(
    v_schedule.task_identifier, coalesce(v_schedule.payload, '{}')::json, null, 'cron:' || v_schedule.id,
    v_schedule.options->>'queueName', (v_schedule.options->>'priority')::integer, (v_schedule.options->>'maxAttempts')::integer);
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'run_schedule', 'schedule:' || schedule_id, reason, jsonb_build_object('job_id', v_job_id, 'task', v_schedule.task_identifier));
  select * into v_job from app_public.queued_jobs j where j.id = v_job_id;
  return v_job;
end;
$$;
comment on function app_public.run_schedule(text, text) is E'Admins: runs a crontab entry''s task now with the entry''s payload and options (also while paused). Audited.';

create function app_public.trigger_task(identifier text, payload json default '{}', reason text default null) returns app_public.queued_jobs
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_job_id bigint;
  v_job app_public.queued_jobs;
begin
  if not exists (select 1 from app_private.tasks t where t.identifier = trigger_task.identifier) then
    raise exception 'No task %', identifier using errcode = 'TKNFD';
  end if;
  if payload is null or json_typeof(payload) <> 'object' then
    raise exception 'The payload must be a JSON object' using errcode = 'TKPAY';
  end if;
  v_job_id := app_private.add_job(identifier, payload);
  -- The payload is not copied into the audit: the job history keeps it, redacted.
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'trigger_task', 'task:' || identifier, reason, jsonb_build_object('job_id', v_job_id));
  select * into v_job from app_public.queued_jobs j where j.id = v_job_id;
  return v_job;
end;
$$;
comment on function app_public.trigger_task(text, json, text) is E'Admins: runs a task now with the given payload (a JSON object; through GraphQL it is also checked against the task''s schema). Unknown task TKNFD, bad payload TKPAY. Audited.';

--------------------------------------------------------------------------------------------
-- Overview (admins in GraphQL; /healthz through the authenticator)

create type app_public.job_overview as (
  queued integer,
  scheduled integer,
  running integer,
  failed integer,
  oldest_due_at timestamptz,
  oldest_due_seconds double precision,
  failures_last_24h integer,
  workers_alive integer,
  scheduler_healthy boolean,
  checked_at timestamptz
);
comment on type app_public.job_overview is E'The state of the job system at a glance.';
comment on column app_public.job_overview.queued is E'Jobs due now and waiting for a worker.';
comment on column app_public.job_overview.oldest_due_seconds is E'How long the longest-waiting due job has waited.';
comment on column app_public.job_overview.failures_last_24h is E'Runs that failed, timed out or were abandoned in the last 24 hours.';
comment on column app_public.job_overview.workers_alive is E'Worker processes whose last heartbeat is recent.';
comment on column app_public.job_overview.scheduler_healthy is E'True when at least one worker process is alive: every worker runs the crontab, so ticks are being enqueued.';

create function app_hidden.job_health(dead_after interval default '30 seconds') returns app_public.job_overview
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select q.queued, q.scheduled, q.running, q.failed, q.oldest_due_at,
         extract(epoch from now() - q.oldest_due_at)::double precision,
         f.n, w.n, w.n > 0, now()
  from (
    select count(*) filter (where state = 'queued')::integer as queued,
           count(*) filter (where state = 'scheduled')::integer as scheduled,
           count(*) filter (where state = 'running')::integer as running,
           count(*) filter (where state = 'failed')::integer as failed,
           min(run_at) filter (where state = 'queued') as oldest_due_at
    from app_private.job_states
  ) q,
  (select count(*)::integer as n from app_public.job_runs r
   where r.outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned') and r.started_at > now() - interval '24 hours') f,
  (select count(*)::integer as n from app_public.worker_processes p where p.last_seen_at > now() - dead_after) w;
$$;
revoke all on function app_hidden.job_health(interval) from public, :DATABASE_VISITOR;
grant execute on function app_hidden.job_health(interval) to :DATABASE_AUTHENTICATOR;
comment on function app_hidden.job_health(interval) is E'The overview for /healthz (called by the API''s own connection, not by clients): queue by state, oldest due job, failures in 24 hours, workers alive (heartbeat within dead_after), scheduler healthy.';

create function app_public.job_overview(dead_after interval default '30 seconds') returns app_public.job_overview
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.require_admin();
  return app_hidden.job_health(dead_after);
end;
$$;
comment on function app_public.job_overview(interval) is E'Admins: the job system at a glance (per task: the tasks view). The same facts as /healthz.';
