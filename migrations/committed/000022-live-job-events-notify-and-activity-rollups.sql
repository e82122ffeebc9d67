--! Previous: sha1:5d8bed8630e74340b98f24b0965ee7cb9bd41a7d
--! Hash: sha1:f8110aeac9e93517ab4548e70d2bfcdcf8fa9c4c
--! Message: live job events (NOTIFY) and activity rollups

-- Live job events and activity rollups, for the dashboard and any client.
--
-- Events. Why: the dashboard (and scripts) must see jobs move without polling. Each change is
-- published with NOTIFY on the channel hourglass:job_events, in the transaction that makes it,
-- so a rolled-back change publishes nothing: a job enqueued (by anything: a trigger, a DBA's
-- add_job, the API), a run started or ended (published by the workers' history writers in the
-- statement that writes each batch, and by a trigger for crash recovery's abandoned marks) and a
-- schedule paused or resumed. A notification's payload is a JSON array of
-- events (at most about 7 kB, as NOTIFY allows 8 kB; a batch of events is sent as several). The
-- API's jobEvents subscription listens, filters by task and key prefix, and streams them to
-- admins one by one. Payloads and errors never travel in events (they may be large, and a
-- payload is only for admins reading history).
--
-- Events cost the writes that publish them (a few microseconds per job: JSON, NOTIFY), so they
-- are published only while someone watches: each API process with live subscriptions keeps a row
-- in app_private.job_event_listeners (refreshed every 20 s, gone 60 s after it stops), and the
-- triggers check for one first. A DBA watching in psql adds one with watch_job_events().
--
-- Enqueues are published by Hourglass's two enqueue functions (app_private.add_jobs, behind
-- app_private.add_job, the tasks' enqueue and the admin functions; app_private.schedule_jobs,
-- behind the domain triggers), in the step that already follows every enqueue (note_wakeups),
-- reading the jobs through graphile-worker's public jobs view: graphile-worker has no hook of its
-- own, and its private tables are not ours to attach to. Jobs added with graphile_worker.add_job
-- directly, and crontab ticks, publish no enqueued event (their runs publish theirs).
--
-- Rollups. Why: a dashboard's charts and totals (runs per minute over the last hour, per hour
-- over the last day, by task and outcome over a window) counted from job_runs read every row of
-- the window: 28 ms for 24 hours alone, 250 ms and more at 20 clients with a million rows. The
-- history writers add each batch's finished runs to per-minute and per-hour rows in the same
-- statement that writes the batch (like the metrics counters), and crash recovery's abandoned
-- marks are added by trigger; the reads then touch a few hundred rows. Minute rows are kept two
-- days, hour rows as long as the history.

drop function if exists app_public.job_activity(text);
drop type if exists app_public.job_activity_bucket;
drop function if exists app_public.job_stats(timestamptz);
drop type if exists app_public.job_stat;
drop trigger if exists _910_events on app_public.schedules;
drop trigger if exists _910_events on app_public.admin_actions;
drop function if exists app_private.tg_admin_actions__events();
drop trigger if exists _910_events_abandoned on app_public.job_runs;
drop function if exists app_private.tg_schedules__events();
drop function if exists app_private.tg_job_runs__abandoned_events();
drop function if exists app_private.job_run_events(uuid, bigint, text, text, integer, text, timestamptz, timestamptz, boolean);
drop function if exists app_private.after_enqueue(bigint[], timestamptz[]);
drop function if exists app_private.is_failure(text);
drop function if exists app_private.publish_job_events(jsonb);
drop function if exists app_private.job_events_wanted();
drop function if exists app_private.watch_job_events(interval);
drop function if exists app_hidden.touch_job_event_listener(text, interval);
drop function if exists app_hidden.drop_job_event_listener(text);
drop table if exists app_private.job_event_listeners;
drop function if exists app_private.publish_job_events_overflow(bigint);
drop function if exists app_private.job_run_event(text, timestamptz, uuid, bigint, text, text, integer, text);
drop function if exists app_private.add_to_job_rollups(text, text, timestamptz, double precision);
drop function if exists app_private.rebuild_job_rollups();
drop table if exists app_private.job_runs_per_minute;
drop table if exists app_private.job_runs_per_hour;

----------------------------------------------------------------------------------------------------
-- Rollups

create table app_private.job_runs_per_minute (
  bucket timestamptz not null,
  task_identifier text not null,
  outcome text not null,
  -- Each history writer adds to its own shard (as in job_metrics), so writers rarely wait for
  -- each other; reads sum the shards.
  shard smallint not null check (shard between 0 and 7),
  runs bigint not null default 0,
  duration_sum_ms double precision not null default 0,
  duration_max_ms double precision not null default 0,
  primary key (bucket, task_identifier, outcome, shard)
);
comment on table app_private.job_runs_per_minute is E'Finished job runs per minute (UTC) of their end, task and outcome (running excluded), added by the history writers and by crash recovery. Kept two days.';

create table app_private.job_runs_per_hour (like app_private.job_runs_per_minute including all);
comment on table app_private.job_runs_per_hour is E'Finished job runs per hour (UTC) of their end, task and outcome, added with the per-minute rows. Kept as long as the history.';

-- Rebuilt from the history: at install (the history already there) and by a DBA after loading
-- history rows by hand (the rollups count only what the history writers and triggers add).
create function app_private.rebuild_job_rollups() returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_private.job_runs_per_minute;
  delete from app_private.job_runs_per_hour;
  insert into app_private.job_runs_per_minute (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
  select date_trunc('minute', r.finished_at, 'UTC'), r.task_identifier, r.outcome, 0, count(*),
         coalesce(sum(r.duration_ms), 0), coalesce(max(r.duration_ms), 0)
  from app_public.job_runs r
  where r.outcome <> 'running' and r.finished_at >= now() - interval '2 days'
  group by 1, 2, 3;
  insert into app_private.job_runs_per_hour (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
  select date_trunc('hour', r.finished_at, 'UTC'), r.task_identifier, r.outcome, 0, count(*),
         coalesce(sum(r.duration_ms), 0), coalesce(max(r.duration_ms), 0)
  from app_public.job_runs r
  where r.outcome <> 'running' and r.finished_at is not null
  group by 1, 2, 3;
$$;
comment on function app_private.rebuild_job_rollups() is E'Recomputes the per-minute and per-hour rollups from app_public.job_runs (locks nothing but the rollups; run it after writing history rows by hand).';
select app_private.rebuild_job_rollups();

-- One run added by a trigger (crash recovery's abandoned marks). The history writer adds its
-- batches itself (src/worker/history.ts), grouped.
create function app_private.add_to_job_rollups(task_identifier text, outcome text, finished_at timestamptz, duration_ms double precision) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.job_runs_per_minute as m (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
  values (date_trunc('minute', finished_at, 'UTC'), task_identifier, outcome, floor(random() * 8)::smallint, 1,
          coalesce(duration_ms, 0), coalesce(duration_ms, 0))
  on conflict (bucket, task_identifier, outcome, shard) do update set
    runs = m.runs + 1, duration_sum_ms = m.duration_sum_ms + excluded.duration_sum_ms,
    duration_max_ms = greatest(m.duration_max_ms, excluded.duration_max_ms);
  insert into app_private.job_runs_per_hour as m (bucket, task_identifier, outcome, shard, runs, duration_sum_ms, duration_max_ms)
  values (date_trunc('hour', finished_at, 'UTC'), task_identifier, outcome, floor(random() * 8)::smallint, 1,
          coalesce(duration_ms, 0), coalesce(duration_ms, 0))
  on conflict (bucket, task_identifier, outcome, shard) do update set
    runs = m.runs + 1, duration_sum_ms = m.duration_sum_ms + excluded.duration_sum_ms,
    duration_max_ms = greatest(m.duration_max_ms, excluded.duration_max_ms);
$$;

-- Abandoned runs: counted for /metrics (as before) and now also in the rollups.
create or replace function app_private.tg_job_runs__abandoned_metrics() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_private.job_metrics as m (task_identifier, outcome, shard, runs, duration_buckets, lateness_buckets)
  values (new.task_identifier, 'abandoned', floor(random() * 8)::smallint, 1,
          array_fill(0::bigint, array[15]), array_fill(0::bigint, array[15]))
  on conflict (task_identifier, outcome, shard) do update set runs = m.runs + 1;
  perform app_private.add_to_job_rollups(new.task_identifier, 'abandoned', coalesce(new.finished_at, now()), new.duration_ms);
  return null;
end;
$$;

create or replace function app_private.sweep_job_runs(batch_size integer, older_than interval, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- No ORDER BY: every row before the cutoff goes, and rows arrive in time order, so the scan
  -- meets the oldest pages first and stops after batch_size rows.
  with gone as (
    delete from app_public.job_runs r
    where r.ctid = any (array(
      select d.ctid from app_public.job_runs d where d.started_at < now() - older_than limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_public.job_runs r where r.started_at < now() - older_than) end;
  if remaining = 0 then
    -- The rollups are small (a row per bucket, task, outcome and writer shard): one statement each.
    delete from app_private.job_runs_per_minute where bucket < now() - interval '2 days';
    delete from app_private.job_runs_per_hour where bucket < now() - older_than;
  end if;
end;
$$;
comment on function app_private.sweep_job_runs(integer, interval) is E'Deletes up to batch_size job history rows that started more than older_than ago; with the last batch, also the per-minute rollups older than two days and the per-hour rollups older than older_than. Returns how many history rows, and how many remain eligible (0 unless the batch was full).';

-- Which outcomes are failures, for the activity figures (and for clients: job_stat.failure).
create function app_private.is_failure(outcome text) returns boolean
language sql immutable
as $$
  select outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned');
$$;

create type app_public.job_activity_bucket as (
  bucket timestamptz,
  runs bigint,
  succeeded bigint,
  failures bigint,
  avg_duration_ms double precision,
  max_duration_ms double precision
);
comment on type app_public.job_activity_bucket is E'Finished job runs in one minute or hour (UTC, by when they ended). runs counts every outcome, skipped ticks of paused schedules included; failures: failed (retrying or permanently), timed out or abandoned.';
comment on column app_public.job_activity_bucket.bucket is E'@notNull\nThe start of the minute or hour.';
comment on column app_public.job_activity_bucket.runs is E'@notNull';
comment on column app_public.job_activity_bucket.succeeded is E'@notNull';
comment on column app_public.job_activity_bucket.failures is E'@notNull';

create function app_public.job_activity(resolution text) returns setof app_public.job_activity_bucket
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_width interval;
  v_count integer;
begin
  perform app_hidden.require_admin();
  case resolution
    when 'minute' then v_width := interval '1 minute'; v_count := 60;
    when 'hour' then v_width := interval '1 hour'; v_count := 24;
    else raise exception 'resolution must be minute (the last hour) or hour (the last day)' using errcode = 'JARES';
  end case;
  return query
  with buckets as (
    select date_trunc(resolution, now(), 'UTC') - v_width * g as bucket from generate_series(v_count - 1, 0, -1) g
  ), rows as (
    select m.bucket, m.outcome, m.runs, m.duration_sum_ms, m.duration_max_ms
    from app_private.job_runs_per_minute m
    where resolution = 'minute' and m.bucket >= date_trunc('minute', now(), 'UTC') - v_width * (v_count - 1)
    union all
    select h.bucket, h.outcome, h.runs, h.duration_sum_ms, h.duration_max_ms
    from app_private.job_runs_per_hour h
    where resolution = 'hour' and h.bucket >= date_trunc('hour', now(), 'UTC') - v_width * (v_count - 1)
  )
  select b.bucket,
         coalesce(sum(r.runs), 0)::bigint,
         coalesce(sum(r.runs) filter (where r.outcome = 'succeeded'), 0)::bigint,
         coalesce(sum(r.runs) filter (where app_private.is_failure(r.outcome)), 0)::bigint,
         sum(r.duration_sum_ms) / nullif(sum(r.runs), 0),
         max(r.duration_max_ms)
  from buckets b left join rows r on r.bucket = b.bucket
  group by b.bucket
  order by b.bucket;
end;
$$;
comment on function app_public.job_activity(text) is E'Admins: finished job runs per minute over the last hour (resolution minute: 60 buckets) or per hour over the last day (hour: 24 buckets), oldest first, empty buckets included. From the rollups, so as cheap with a million history rows as with none.';

create type app_public.job_stat as (
  task_identifier text,
  outcome text,
  failure boolean,
  runs bigint,
  avg_duration_ms double precision,
  max_duration_ms double precision
);
comment on type app_public.job_stat is E'Finished runs of one task with one outcome in a window.';
comment on column app_public.job_stat.task_identifier is E'@notNull';
comment on column app_public.job_stat.outcome is E'@notNull';
comment on column app_public.job_stat.failure is E'@notNull\nWhether the outcome counts as a failure (failed, timed out or abandoned), as in jobActivity''s failures.';
comment on column app_public.job_stat.runs is E'@notNull';

create function app_public.job_stats(since timestamptz) returns setof app_public.job_stat
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_since timestamptz := date_trunc('minute', since, 'UTC');
  -- Whole hours from the hourly rows, the part-hour before them from the minute rows (kept two
  -- days; older windows start at the hour).
  v_first_hour timestamptz := case when since > now() - interval '2 days'
                                   then date_trunc('hour', v_since + interval '59 minutes 59.999999 seconds', 'UTC')
                                   else date_trunc('hour', v_since, 'UTC') end;
begin
  perform app_hidden.require_admin();
  if since is null then
    raise exception 'since is required' using errcode = 'JASNC';
  end if;
  return query
  select r.task_identifier, r.outcome, app_private.is_failure(r.outcome), sum(r.runs)::bigint,
         sum(r.duration_sum_ms) / nullif(sum(r.runs), 0), max(r.duration_max_ms)
  from (
    select m.task_identifier, m.outcome, m.runs, m.duration_sum_ms, m.duration_max_ms
    from app_private.job_runs_per_minute m where m.bucket >= v_since and m.bucket < v_first_hour
    union all
    select h.task_identifier, h.outcome, h.runs, h.duration_sum_ms, h.duration_max_ms
    from app_private.job_runs_per_hour h where h.bucket >= v_first_hour
  ) r
  group by r.task_identifier, r.outcome
  order by r.task_identifier, r.outcome;
end;
$$;
comment on function app_public.job_stats(timestamptz) is E'Admins: finished runs by task and outcome since a time (to the minute within the last two days, to the hour before), with average and longest duration. From the rollups: a dashboard''s "last 24 hours" costs the same with a million history rows as with none.';

revoke all on function app_public.job_activity(text) from public;
revoke all on function app_public.job_stats(timestamptz) from public;
grant execute on function app_public.job_activity(text) to :DATABASE_VISITOR;
grant execute on function app_public.job_stats(timestamptz) to :DATABASE_VISITOR;

----------------------------------------------------------------------------------------------------
-- Events

create table app_private.job_event_listeners (
  id text primary key,
  expires_at timestamptz not null
);
comment on table app_private.job_event_listeners is E'Who is watching job events: an API process with live jobEvents subscriptions, or a DBA (watch_job_events). Events are published only while a row has not expired.';

create function app_private.job_events_wanted() returns boolean
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select exists (select 1 from app_private.job_event_listeners where expires_at > now());
$$;

-- For the API (its authenticator connection): keep or drop this process's row.
create function app_hidden.touch_job_event_listener(id text, ttl interval) returns void
language sql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.job_event_listeners as l (id, expires_at) values (id, now() + least(ttl, interval '10 minutes'))
  on conflict (id) do update set expires_at = excluded.expires_at;
  delete from app_private.job_event_listeners l where l.expires_at < now() - interval '1 hour';
$$;
comment on function app_hidden.touch_job_event_listener(text, interval) is E'An API process with live job event subscriptions: publish events for the next ttl (at most 10 minutes).';
create function app_hidden.drop_job_event_listener(id text) returns void
language sql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_private.job_event_listeners l where l.id = drop_job_event_listener.id;
$$;
comment on function app_hidden.drop_job_event_listener(text) is E'An API process''s last job event subscription ended.';
revoke all on function app_hidden.touch_job_event_listener(text, interval) from public;
revoke all on function app_hidden.drop_job_event_listener(text) from public;
grant execute on function app_hidden.touch_job_event_listener(text, interval) to :DATABASE_AUTHENTICATOR;
grant execute on function app_hidden.drop_job_event_listener(text) to :DATABASE_AUTHENTICATOR;

-- For a DBA: `select app_private.watch_job_events(); listen "hourglass:job_events";`
create function app_private.watch_job_events(for_how_long interval default '1 hour') returns timestamptz
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.job_event_listeners as l (id, expires_at) values ('sql:' || session_user || ':' || pg_backend_pid(), now() + for_how_long)
  on conflict (id) do update set expires_at = excluded.expires_at
  returning expires_at;
$$;
comment on function app_private.watch_job_events(interval) is E'Publishes job events (NOTIFY hourglass:job_events) for the given time, for a DBA listening in psql. Returns until when.';

create function app_private.publish_job_events(events jsonb) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  -- A notification takes the events that start within its first 4,000 bytes: with the last of
  -- them (an event is at most about 3.5 kB: a 512-character key is at most 2 kB of UTF-8, 3 kB
  -- escaped) and the separators it stays under NOTIFY's 8,000-byte limit.
  select pg_notify('hourglass:job_events', jsonb_agg(c.e order by c.i)::text)
  from (
    select x.e, x.i, (sum(octet_length(x.e::text)) over (order by x.i) - octet_length(x.e::text)) / 4000 as chunk
    from jsonb_array_elements(events) with ordinality x(e, i)
  ) c
  group by c.chunk;
$$;
comment on function app_private.publish_job_events(jsonb) is E'Sends a JSON array of job events on the channel hourglass:job_events, as several notifications when it is large.';

-- A statement that changes more than 10,000 jobs or runs (a bulk load, a DBA's mass update)
-- publishes one overflow event instead of one each: a flood of events helps no one watching, and
-- would cost the statement more than its own work. Subscribers receive it whatever their filter
-- and re-read what they show.
create function app_private.publish_job_events_overflow(count bigint) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  select pg_notify('hourglass:job_events', jsonb_build_array(jsonb_build_object('kind', 'overflow', 'at', now(), 'count', count))::text);
$$;

create function app_private.job_run_event(kind text, at timestamptz, run_id uuid, job_id bigint, task_identifier text,
                                          job_key text, attempt integer, outcome text) returns jsonb
language sql stable
as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'kind', kind, 'at', at, 'jobId', job_id::text, 'runId', run_id, 'taskIdentifier', task_identifier,
    'jobKey', job_key, 'attempt', attempt, 'outcome', case when kind <> 'started' then outcome end));
$$;

-- A run's events: when its history row is first written, started (unless a paused tick's skip)
-- and, when it was written finished (a run shorter than a flush of the history writer is written
-- once, at its end), its end too; when a running row is completed, its end. Scalars rather than
-- the row: the history writer passes what its statement returns, without building whole rows.
create function app_private.job_run_events(run_id uuid, job_id bigint, task_identifier text, job_key text, attempt integer,
                                           outcome text, started_at timestamptz, finished_at timestamptz,
                                           first_write boolean) returns setof jsonb
language sql stable
as $$
  select app_private.job_run_event('started', started_at, run_id, job_id, task_identifier, job_key, attempt, outcome)
  where first_write and outcome <> 'skipped'
  union all
  select app_private.job_run_event(case outcome when 'failed_retrying' then 'failed' when 'failed_permanently' then 'failed' else outcome end,
                                   coalesce(finished_at, now()), run_id, job_id, task_identifier, job_key, attempt, outcome)
  where outcome <> 'running';
$$;
comment on function app_private.job_run_events(uuid, bigint, text, text, integer, text, timestamptz, timestamptz, boolean) is E'The job events of a history row being written (first_write) or completed. The history writers publish them in the statement that writes a batch (src/worker/history.ts), so the hot path needs no trigger.';

-- Crash recovery's abandoned marks (the only other writer of run outcomes).
create function app_private.tg_job_runs__abandoned_events() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_private.job_events_wanted() then
    perform app_private.publish_job_events(jsonb_build_array(app_private.job_run_event('abandoned', coalesce(new.finished_at, now()),
      new.id, new.job_id, new.task_identifier, new.job_key, new.attempt, new.outcome)));
  end if;
  return null;
end;
$$;
create trigger _910_events_abandoned after update of outcome on app_public.job_runs
  for each row when (old.outcome = 'running' and new.outcome = 'abandoned')
  execute function app_private.tg_job_runs__abandoned_events();

-- What follows every enqueue: the wake-ups of future jobs (as before), and the enqueued events
-- while someone watches. A job added under a key that was taken is replaced (graphile-worker
-- returns it too): it is published again, with its new run time.
create function app_private.after_enqueue(job_ids bigint[], run_ats timestamptz[]) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.note_wakeups(run_ats);
  if coalesce(cardinality(job_ids), 0) = 0 or not app_private.job_events_wanted() then
    return;
  end if;
  if cardinality(job_ids) > 10000 then
    perform app_private.publish_job_events_overflow(cardinality(job_ids));
    return;
  end if;
  perform app_private.publish_job_events(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
      'kind', 'enqueued', 'at', j.created_at, 'jobId', j.id::text, 'taskIdentifier', j.task_identifier,
      'jobKey', j.key, 'runAt', j.run_at)) order by j.id))
  from graphile_worker.jobs j
  where j.id = any (job_ids)
  having count(*) > 0;
end;
$$;
comment on function app_private.after_enqueue(bigint[], timestamptz[]) is E'Called by app_private.add_jobs and app_private.schedule_jobs after each enqueue: records the wake-ups of future jobs, and publishes enqueued events while someone watches.';

create or replace function app_private.schedule_jobs(identifier text, payloads json[], run_ats timestamptz[], job_keys text[])
returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_task app_private.tasks;
  v_ids bigint[];
begin
  if coalesce(cardinality(payloads), 0) = 0 then
    return 0;
  end if;
  select * into v_task from app_private.tasks t where t.identifier = schedule_jobs.identifier;
  if not found then
    raise exception 'Unknown task %', identifier using errcode = 'TASKU';
  end if;
  v_ids := array(select j.id from graphile_worker.add_jobs(array(
    select row(identifier, u.payload, null, u.run_at, v_task.max_attempts, u.job_key, v_task.priority, null)::graphile_worker.job_spec
    from unnest(payloads, run_ats, job_keys) as u(payload, run_at, job_key))) j);
  perform app_private.after_enqueue(v_ids, run_ats);
  return cardinality(v_ids);
end;
$$;

create or replace function app_private.add_jobs(specs graphile_worker.job_spec[], job_key_preserve_run_at boolean default false)
returns setof bigint
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
  v_ids bigint[];
begin
  select s.identifier into v_unknown
  from unnest(specs) s
  where not exists (select 1 from app_private.tasks t where t.identifier = s.identifier)
  limit 1;
  if v_unknown is not null then
    raise exception 'Unknown task %', v_unknown using errcode = 'TASKU';
  end if;
  v_ids := array(
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
    ) j);
  perform app_private.after_enqueue(v_ids, array(select s.run_at from unnest(specs) s where s.run_at is not null));
  return query select unnest(v_ids);
end;
$$;

create function app_private.tg_schedules__events() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not app_private.job_events_wanted() then
    return null;
  end if;
  perform app_private.publish_job_events(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
    'kind', case when new.paused_at is null then 'schedule_resumed' else 'schedule_paused' end,
    'at', now(), 'scheduleId', new.id, 'taskIdentifier', new.task_identifier,
    'reason', left(new.pause_reason, 200)))));
  return null;
end;
$$;
create trigger _910_events after update of paused_at on app_public.schedules
  for each row when (old.paused_at is distinct from new.paused_at)
  execute function app_private.tg_schedules__events();

-- Admins' actions (retry, cancel, reschedule, trigger, run now, pause, resume), from their audit
-- rows: a job replaced or removed changes graphile-worker's jobs table without an insert, so
-- without this a second admin's dashboard would not see a cancel or a reschedule.
create function app_private.tg_admin_actions__events() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_private.job_events_wanted() then
    perform app_private.publish_job_events(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
      'kind', 'admin_action', 'at', new.created_at, 'action', new.action, 'target', left(new.target, 200),
      'reason', left(new.reason, 200)))));
  end if;
  return null;
end;
$$;
create trigger _910_events after insert on app_public.admin_actions
  for each row execute function app_private.tg_admin_actions__events();
