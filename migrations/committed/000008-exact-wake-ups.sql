--! Previous: sha1:1d6abfdc9c58ed77bc1c2368fdade3a9e875458d
--! Hash: sha1:5cf3813b8fd40441faaaa30858046bc9c04175ae
--! Message: exact wake-ups

-- Exact wake-ups for future jobs. Why: graphile-worker notices that a scheduled job has become
-- due only at its next poll (WORKER_POLL_INTERVAL_MS, 2 s by default), so an offer expiring at
-- 12:00:00.000 ran up to two seconds late. Every future job Hourglass enqueues now also records its
-- run_at, rounded up to 10 ms, in app_private.job_wakeups and announces new ones on the
-- hourglass:wake channel; each worker keeps a timer for the next wake-up in the coming minute and
-- nudges its job fetcher at that moment (src/worker/wake.ts). A stale wake-up (the job was
-- rescheduled or removed) costs one empty fetch; the hourly job_wakeups__sweep deletes past ones.

drop function if exists app_private.sweep_job_wakeups(integer);
drop function if exists app_private.upcoming_wakeups(interval);
drop function if exists app_private.note_wakeups(timestamptz[]);
drop table if exists app_private.job_wakeups;

create table app_private.job_wakeups (
  at timestamptz primary key
);
comment on table app_private.job_wakeups is E'Moments (10 ms resolution) at which some future job becomes due; read by the workers to wake exactly then. Past rows are swept hourly.';

create function app_private.note_wakeups(run_ats timestamptz[]) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new integer;
begin
  insert into app_private.job_wakeups (at)
  select distinct to_timestamp(ceil(extract(epoch from r) * 100) / 100)
  from unnest(run_ats) r
  where r > now()
  on conflict (at) do nothing;
  get diagnostics v_new = row_count;
  if v_new > 0 then
    perform pg_notify('hourglass:wake', '');
  end if;
end;
$$;
comment on function app_private.note_wakeups(timestamptz[]) is E'Records the future run_ats of jobs just enqueued as wake-ups, and tells the workers when any is new.';

create function app_private.upcoming_wakeups(horizon interval) returns table (now_ms double precision, wakeups double precision[])
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select extract(epoch from clock_timestamp()) * 1000,
         array(select extract(epoch from w.at) * 1000 from app_private.job_wakeups w
               where w.at > now() - interval '1 second' and w.at <= now() + horizon
               order by w.at limit 10000);
$$;
comment on function app_private.upcoming_wakeups(interval) is E'For a worker: the database clock (epoch ms, to correct for clock skew) and the wake-ups within the horizon (epoch ms).';

create or replace function app_private.schedule_jobs(identifier text, payloads json[], run_ats timestamptz[], job_keys text[])
returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_task app_private.tasks;
  v_count integer;
begin
  if coalesce(cardinality(payloads), 0) = 0 then
    return 0;
  end if;
  select * into v_task from app_private.tasks t where t.identifier = schedule_jobs.identifier;
  if not found then
    raise exception 'Unknown task %', identifier using errcode = 'TASKU';
  end if;
  select count(*) into v_count from graphile_worker.add_jobs(array(
    select row(identifier, u.payload, null, u.run_at, v_task.max_attempts, u.job_key, v_task.priority, null)::graphile_worker.job_spec
    from unnest(payloads, run_ats, job_keys) as u(payload, run_at, job_key)));
  perform app_private.note_wakeups(run_ats);
  return v_count;
end;
$$;

create or replace function app_private.add_jobs(specs graphile_worker.job_spec[], job_key_preserve_run_at boolean default false)
returns setof bigint
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
begin
  select s.identifier into v_unknown
  from unnest(specs) s
  where not exists (select 1 from app_private.tasks t where t.identifier = s.identifier)
  limit 1;
  if v_unknown is not null then
    raise exception 'Unknown task %', v_unknown using errcode = 'TASKU';
  end if;
  return query
    select j.id
    from graphile_worker.add_jobs(
      array(
        select row(
          s.identifier, s.payload, s.queue_name, s.run_at,
          coalesce(s.max_attempts, t.max_attempts), s.job_key,
          coalesce(s.priority, t.priority), s.flags
        )::graphile_worker.job_spec
        from unnest(specs) s
        join app_private.tasks t on t.identifier = s.identifier
      ),
      job_key_preserve_run_at
    ) j;
  perform app_private.note_wakeups(array(select s.run_at from unnest(specs) s where s.run_at is not null));
end;
$$;

create function app_private.sweep_job_wakeups(batch_size integer, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_private.job_wakeups w
    where w.at = any (array(select p.at from app_private.job_wakeups p where p.at < now() - interval '1 minute' order by p.at limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_private.job_wakeups p where p.at < now() - interval '1 minute') end;
end;
$$;
comment on function app_private.sweep_job_wakeups(integer) is E'Deletes up to batch_size wake-ups more than a minute in the past. Returns how many, and how many remain (0 unless the batch was full).';
