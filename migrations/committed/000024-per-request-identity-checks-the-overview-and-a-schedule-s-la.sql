--! Previous: sha1:a6f1d36f551b05d06d85bac95f3466480d88d7ad
--! Hash: sha1:07ab5785aa50c5435a7689729425cdebfa051f79
--! Message: Per-request identity checks, the overview and a schedule's last run in PL/pgSQL, and a cheaper next run

-- Cheaper per-request checks, and the schedules' nextRunAt.
--
-- The identity functions every request and every row level security policy calls were SQL
-- functions with a pinned search_path (security definer), which PostgreSQL neither inlines nor,
-- before version 18, keeps a plan for: each query that called one planned it, and the functions it
-- calls, again (about 130 microseconds for current_user_is_admin on PostgreSQL 15). The schedules
-- list paid that fifteen times, once per schedule's last run through job_runs' policy. In PL/pgSQL
-- their plans are kept for the session (the three identity functions still call one another, as before:
-- about 10 microseconds for current_user_is_admin, against 5 with the lookups folded into one query).

create or replace function app_public.current_session_id() returns uuid
language plpgsql stable
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return nullif(pg_catalog.current_setting('hourglass.session_id', true), '')::uuid;
end;
$$;

create or replace function app_public.current_user_id() returns bigint
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return (select s.user_id
          from app_private.sessions s
          where s.id = app_public.current_session_id()
            and s.expires_at > now());
end;
$$;

create or replace function app_hidden.current_user_is_admin() returns boolean
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return coalesce((select u.is_admin from app_public.users u where u.id = app_public.current_user_id()), false);
end;
$$;

create or replace function app_hidden.session_id_for_token(token text) returns uuid
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  return (select s.id
          from app_private.sessions s
          where s.token_hash = sha256(convert_to(token, 'UTF8'))
            and s.expires_at > now());
end;
$$;

create or replace function app_public.schedules_last_run(s app_public.schedules) returns app_public.job_runs
language plpgsql stable
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_run app_public.job_runs;
begin
  select r.* into v_run from app_public.job_runs r
  where r.job_key = 'cron:' || s.id
  order by r.started_at desc
  limit 1;
  if not found then
    return null;
  end if;
  return v_run;
end;
$$;

-- The overview (jobOverview, /healthz) likewise: planning its three counts took about 0.5 ms of
-- each call on PostgreSQL 15; in PL/pgSQL the plan is kept.
create or replace function app_hidden.job_health(dead_after interval default interval '30 seconds') returns app_public.job_overview
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_overview app_public.job_overview;
begin
  select q.queued, q.scheduled, q.running, q.failed, q.oldest_due_at,
         extract(epoch from now() - q.oldest_due_at)::double precision,
         f.n, w.n, w.n > 0, now()
  into v_overview
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
  return v_overview;
end;
$$;

-- The schedules' nextRunAt, cheaper: the dashboard lists every schedule with its next tick, and
-- cron_next_run walked every hour and minute of the first day up to the current time (about 800
-- steps at 13:15 for an hourly entry) before finding it. It now starts that day at the current
-- hour and minute. '*' fields skip the pattern matching. Same answers (test/api/control.test.ts
-- compares it with graphile-worker's own schedule).

create or replace function app_hidden.cron_values(field text, lo integer, hi integer) returns integer[]
language plpgsql immutable strict
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_part text;
  v_m text[];
  v_values integer[] := '{}';
begin
  if field = '*' then
    return array(select generate_series(lo, hi));
  end if;
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

create or replace function app_hidden.cron_next_run(pattern text, after timestamptz) returns timestamptz
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
  v_from_hour integer := extract(hour from v_start)::integer;
  v_from_minute integer := extract(minute from v_start)::integer;
  v_day date;
  v_hour integer;
  v_minute integer;
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
  -- hour and minute of a matching day at or after the start (on the start's own day, from its
  -- hour and minute; the arrays are sorted). Like cron and graphile-worker: when both day fields
  -- are restricted, either may match.
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
      continue when i = 0 and v_hour < v_from_hour;
      foreach v_minute in array v_minutes loop
        continue when i = 0 and v_hour = v_from_hour and v_minute < v_from_minute;
        return (v_day + make_interval(hours => v_hour, mins => v_minute)) at time zone 'UTC';
      end loop;
    end loop;
  end loop;
  return null;
end;
$$;
