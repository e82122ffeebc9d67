--! Previous: sha1:07ab5785aa50c5435a7689729425cdebfa051f79
--! Hash: sha1:afee5f6049a5bcd3c5524244c0cfbc605edfd500
--! Message: Cheaper catalogue, overview and schedules reads; sessions an API process may remember

-- Cheaper control-plane reads (the task catalogue, the overview, the schedules list, the history
-- and its activity), and what an API process needs to remember sessions:
--
-- 1. A crontab pattern is parsed once, when the entry is written, not by every schedules list: each
--    schedule's nextRunAt parsed its five fields again (about 40 microseconds of the 50 each call
--    took on PostgreSQL 15; 15 entries, 0.8 ms of every request). The parsed fields are a stored
--    generated column of app_public.schedules (hidden from GraphQL); cron_next_run(pattern, after)
--    parses and then walks the same way, so there is one parser and one walk.
-- 2. The queue's counts by state (the catalogue per task, the overview in all) group the jobs by
--    state once and then spread the few groups into columns, instead of testing each job's state
--    expression once per column: about 1.0 ms against 1.4 ms for 3,050 jobs. The state is still
--    defined once, by app_private.job_states. The catalogue and the overview each spread the
--    groups themselves: the overview summing a shared per-task view instead cost it 0.2-0.3 ms more.
-- 3. The session of a token with its expiry, and an announcement of every session that ends early.
-- 4. The history's BRIN index with 16 pages per range.
-- 5. jobActivity computes its first bucket once.

drop function if exists app_public.schedules_next_run_at(app_public.schedules);
alter table app_public.schedules drop column if exists cron;
drop function if exists app_hidden.cron_next_run(text, timestamptz);
drop function if exists app_hidden.cron_next_run(app_hidden.cron_spec, timestamptz);
drop function if exists app_hidden.cron_parse(text);
drop function if exists app_hidden.cron_parse_or_null(text);
drop type if exists app_hidden.cron_spec;

create type app_hidden.cron_spec as (minutes integer[], hours integer[], dates integer[], months integer[], dows integer[]);
comment on type app_hidden.cron_spec is E'A five-field crontab pattern parsed: the values each field allows, sorted (day of week 0-6, Sunday 0).';

create function app_hidden.cron_parse(pattern text) returns app_hidden.cron_spec
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_f text[] := regexp_split_to_array(btrim(pattern), '\s+');
begin
  if cardinality(v_f) <> 5 then
    raise exception 'A crontab pattern has five fields, not %', pattern using errcode = 'CRONP';
  end if;
  return row(app_hidden.cron_values(v_f[1], 0, 59), app_hidden.cron_values(v_f[2], 0, 23), app_hidden.cron_values(v_f[3], 1, 31),
             app_hidden.cron_values(v_f[4], 1, 12), app_hidden.cron_values(v_f[5], 0, 6))::app_hidden.cron_spec;
end;
$$;
comment on function app_hidden.cron_parse(text) is E'Parses a five-field crontab pattern (numbers, ranges, lists, * and */n, as graphile-worker reads them); an unsupported one raises CRONP.';

-- For the stored column: a pattern this parser does not read must not stop the crontab from being
-- recorded at start-up. Its column stays null, and nextRunAt then raises CRONP for that entry
-- alone, as before.
create function app_hidden.cron_parse_or_null(pattern text) returns app_hidden.cron_spec
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return app_hidden.cron_parse(pattern);
exception when sqlstate 'CRONP' then
  return null;
end;
$$;

create function app_hidden.cron_next_run(spec app_hidden.cron_spec, after timestamptz) returns timestamptz
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_any_date boolean := cardinality(spec.dates) = 31;
  v_any_dow boolean := cardinality(spec.dows) = 7;
  v_start timestamp := date_trunc('minute', after at time zone 'UTC') + interval '1 minute';
  v_from_hour integer := extract(hour from v_start)::integer;
  v_from_minute integer := extract(minute from v_start)::integer;
  v_day date;
  v_hour integer;
  v_minute integer;
begin
  -- Day by day (at most eight years: 29 February after a skipped leap year), then the first
  -- hour and minute of a matching day at or after the start (on the start's own day, from its
  -- hour and minute; the arrays are sorted). Like cron and graphile-worker: when both day fields
  -- are restricted, either may match.
  for i in 0 .. 366 * 8 loop
    v_day := v_start::date + i;
    continue when not extract(month from v_day)::integer = any (spec.months);
    continue when not case
      when not v_any_date and not v_any_dow then extract(day from v_day)::integer = any (spec.dates) or extract(dow from v_day)::integer = any (spec.dows)
      when not v_any_date then extract(day from v_day)::integer = any (spec.dates)
      when not v_any_dow then extract(dow from v_day)::integer = any (spec.dows)
      else true
    end;
    foreach v_hour in array spec.hours loop
      continue when i = 0 and v_hour < v_from_hour;
      foreach v_minute in array spec.minutes loop
        continue when i = 0 and v_hour = v_from_hour and v_minute < v_from_minute;
        return (v_day + make_interval(hours => v_hour, mins => v_minute)) at time zone 'UTC';
      end loop;
    end loop;
  end loop;
  return null;
end;
$$;
comment on function app_hidden.cron_next_run(app_hidden.cron_spec, timestamptz) is E'The first minute after `after` that a parsed crontab pattern (UTC) matches, or null if none within eight years.';

create function app_hidden.cron_next_run(pattern text, after timestamptz) returns timestamptz
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return app_hidden.cron_next_run(app_hidden.cron_parse(pattern), after);
end;
$$;
comment on function app_hidden.cron_next_run(text, timestamptz) is E'The first minute after `after` that a five-field crontab pattern (UTC) matches, or null if none within eight years.';

alter table app_public.schedules add column cron app_hidden.cron_spec generated always as (app_hidden.cron_parse_or_null(pattern)) stored;
comment on column app_public.schedules.cron is E'@behavior -*\nThe pattern parsed (null if this parser cannot read it), for nextRunAt.';

create function app_public.schedules_next_run_at(s app_public.schedules) returns timestamptz
language plpgsql stable
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if s.cron is null then
    return app_hidden.cron_next_run(s.pattern, now());
  end if;
  return app_hidden.cron_next_run(s.cron, now());
end;
$$;
comment on function app_public.schedules_next_run_at(app_public.schedules) is E'The entry''s next tick (UTC). While the entry is paused that tick is skipped.';

-- 2. The queue's counts by state.

create or replace view app_public.tasks with (security_barrier) as
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
    select g.task_identifier,
           sum(g.jobs) filter (where g.state = 'queued')::integer as queued,
           sum(g.jobs) filter (where g.state = 'scheduled')::integer as scheduled,
           sum(g.jobs) filter (where g.state = 'running')::integer as running,
           sum(g.jobs) filter (where g.state = 'failed')::integer as failed,
           min(g.oldest_run_at) filter (where g.state = 'queued') as oldest_due_at
    from (select j.task_identifier, j.state, count(*) as jobs, min(j.run_at) as oldest_run_at
          from app_private.job_states j
          group by j.task_identifier, j.state) g
    group by g.task_identifier
  ) q on q.task_identifier = t.identifier
  left join lateral (
    select r.finished_at, r.error from app_public.job_runs r
    where r.task_identifier = t.identifier and r.outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned')
    order by r.started_at desc limit 1
  ) f on true
  where app_hidden.current_user_is_admin();

create or replace function app_hidden.job_health(dead_after interval default interval '30 seconds') returns app_public.job_overview
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_overview app_public.job_overview;
begin
  select coalesce(q.queued, 0), coalesce(q.scheduled, 0), coalesce(q.running, 0), coalesce(q.failed, 0), q.oldest_due_at,
         extract(epoch from now() - q.oldest_due_at)::double precision,
         f.n, w.n, w.n > 0, now()
  into v_overview
  from (
    select sum(g.jobs) filter (where g.state = 'queued')::integer as queued,
           sum(g.jobs) filter (where g.state = 'scheduled')::integer as scheduled,
           sum(g.jobs) filter (where g.state = 'running')::integer as running,
           sum(g.jobs) filter (where g.state = 'failed')::integer as failed,
           min(g.oldest_run_at) filter (where g.state = 'queued') as oldest_due_at
    from (select j.state, count(*) as jobs, min(j.run_at) as oldest_run_at
          from app_private.job_states j
          group by j.state) g
  ) q,
  (select count(*)::integer as n from app_public.job_runs r
   where r.outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned') and r.started_at > now() - interval '24 hours') f,
  (select count(*)::integer as n from app_public.worker_processes p where p.last_seen_at > now() - dead_after) w;
  return v_overview;
end;
$$;

-- 3. Sessions an API process may remember (src/api/sessions.ts): the session of a token with its
--    expiry, and an announcement of every session that ends before it expires.
--    session_id_for_token stays for API processes of the previous release during a rolling deploy.

drop function if exists app_hidden.session_for_token(text);
create function app_hidden.session_for_token(token text, out id uuid, out expires_at timestamptz)
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  select s.id, s.expires_at into id, expires_at
  from app_private.sessions s
  where s.token_hash = sha256(convert_to(token, 'UTF8'))
    and s.expires_at > now();
end;
$$;
revoke all on function app_hidden.session_for_token(text) from public, :DATABASE_VISITOR;
grant execute on function app_hidden.session_for_token(text) to :DATABASE_AUTHENTICATOR;
comment on function app_hidden.session_for_token(text) is E'The live session a bearer token belongs to and when it expires (nulls if none). For the API''s authenticator only.';

-- Ended before their expiry: deleted (logout, a DBA, a deleted user), changed (an expiry moved), or
-- truncated. The payload lists the SHA-256 of their tokens in hex (what the table keeps), or is * for
-- more than 50 sessions at once or a truncate: every API process then forgets all it remembers.
-- Sessions already expired when deleted (the daily sweep) are announced to nobody: no process uses
-- a session past its expiry.
drop trigger if exists _900_sessions_ended on app_private.sessions;
drop trigger if exists _900_sessions_changed on app_private.sessions;
drop trigger if exists _900_sessions_truncated on app_private.sessions;
drop function if exists app_private.tg_sessions__ended();
create function app_private.tg_sessions__ended() returns trigger
language plpgsql
set search_path to pg_catalog, public, pg_temp
set jit = off
as $$
declare
  v_count integer;
  v_digests text;
begin
  if tg_op = 'TRUNCATE' then
    perform pg_notify('hourglass:sessions_ended', '*');
    return null;
  end if;
  select count(*), string_agg(encode(e.token_hash, 'hex'), ',') into v_count, v_digests
  from (select token_hash from ended where expires_at > now() limit 51) e;
  if v_count > 0 then
    perform pg_notify('hourglass:sessions_ended', case when v_count > 50 then '*' else v_digests end);
  end if;
  return null;
end;
$$;
create trigger _900_sessions_ended after delete on app_private.sessions
  referencing old table as ended for each statement execute function app_private.tg_sessions__ended();
create trigger _900_sessions_changed after update on app_private.sessions
  referencing old table as ended for each statement execute function app_private.tg_sessions__ended();
create trigger _900_sessions_truncated after truncate on app_private.sessions
  for each statement execute function app_private.tg_sessions__ended();

-- 4. The history's time index summarises 16 pages per entry instead of 128: a range of started_at
--    (the last hour's aggregates, the filter every history query carries) read about 4,500
--    rows it then threw away, four times the 1,060 it kept (2.9 ms with a million rows; 0.7-1.1 ms
--    now). Still a BRIN index, 72 kB per million rows, and as cheap for the history writer's appends
--    (300,000 inserts took as long with either, within this machine's noise). autosummarize: a filled range is summarised by autovacuum soon after,
--    rather than at the next vacuum of the table.
drop index if exists app_public.job_runs_started_brin;
create index job_runs_started_brin on app_public.job_runs using brin (started_at) with (pages_per_range = 16, autosummarize = on);

-- 5. jobActivity: the bucket of each rollup row was found by truncating now() in UTC once per
--    bucket for the join and again for each of the ~1,000 rows for the sort and the grouping
--    (a time zone lookup each time: 1.4 ms of a 24-hour call). The first bucket is computed
--    once, the rows are summed per bucket, and the empty buckets come from a series.
create or replace function app_public.job_activity(resolution text) returns setof app_public.job_activity_bucket
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_width interval;
  v_count integer;
  v_first timestamptz;
begin
  perform app_hidden.require_admin();
  case resolution
    when 'minute' then v_width := interval '1 minute'; v_count := 60;
    when 'hour' then v_width := interval '1 hour'; v_count := 24;
    else raise exception 'resolution must be minute (the last hour) or hour (the last day)' using errcode = 'JARES';
  end case;
  v_first := date_trunc(resolution, now(), 'UTC') - v_width * (v_count - 1);
  return query
  with sums as (
    select m.bucket, sum(m.runs) as runs, sum(m.runs) filter (where m.outcome = 'succeeded') as succeeded,
           sum(m.runs) filter (where app_private.is_failure(m.outcome)) as failures,
           sum(m.duration_sum_ms) as duration_sum_ms, max(m.duration_max_ms) as duration_max_ms
    from app_private.job_runs_per_minute m
    where resolution = 'minute' and m.bucket >= v_first
    group by m.bucket
    union all
    select h.bucket, sum(h.runs), sum(h.runs) filter (where h.outcome = 'succeeded'),
           sum(h.runs) filter (where app_private.is_failure(h.outcome)),
           sum(h.duration_sum_ms), max(h.duration_max_ms)
    from app_private.job_runs_per_hour h
    where resolution = 'hour' and h.bucket >= v_first
    group by h.bucket
  )
  select b.bucket, coalesce(s.runs, 0)::bigint, coalesce(s.succeeded, 0)::bigint, coalesce(s.failures, 0)::bigint,
         s.duration_sum_ms / nullif(s.runs, 0), s.duration_max_ms
  from generate_series(v_first, v_first + v_width * (v_count - 1), v_width) b(bucket)
  left join sums s on s.bucket = b.bucket
  order by b.bucket;
end;
$$;
