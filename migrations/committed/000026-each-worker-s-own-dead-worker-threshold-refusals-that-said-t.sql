--! Previous: sha1:afee5f6049a5bcd3c5524244c0cfbc605edfd500
--! Hash: sha1:eae8d953ae2d28e7c326a7e65ab3d54a635cf734
--! Message: Each worker's own dead-worker threshold; refusals that said too much; listener functions not the visitor's

-- Review fixes: each worker's own dead-worker threshold; two refusals that said too much; two
-- functions the visitor could call.
--
-- 1. A worker process records its WORKER_DEAD_AFTER_MS in its heartbeat row (dead_after). Whether
--    it is alive is judged by that: jobOverview, /healthz and /metrics agreed only while every
--    setting was the default (the GraphQL overview and the dashboard counted workers seen within
--    30 s, /healthz and /metrics within the API process's own setting), and a recovering worker
--    with a shorter setting than another's could release the jobs of a live worker that beats
--    less often. Crash recovery now waits for the longer of its own threshold and the silent
--    worker's. Workers of the previous release (the 7-argument heartbeat) are recorded with 30 s,
--    the default, during a rolling deploy.
-- 2. withdrawFromExchange checked the exchange's state before the caller's place in it: anyone
--    learnt from EXSTA that an exchange existed and was being matched. Now EXNPT comes first.
-- 3. The job-event listener functions (for the API's authenticator) were executable by the
--    visitor through the schema's default privileges: any signed-in client could keep job events
--    published. Revoked, as for the other authenticator-only functions.

-- 1. Each worker's own threshold.

alter table app_public.worker_processes add column if not exists dead_after interval not null default interval '30 seconds';
comment on column app_public.worker_processes.dead_after is E'Its WORKER_DEAD_AFTER_MS: silent for longer than this, it is counted dead and crash recovery releases its jobs.';

drop function if exists app_private.heartbeat(text, text, integer, text, text[], integer, interval, interval);
create function app_private.heartbeat(id text, host text, pid integer, label text, tasks text[], running integer, gap interval, dead_after interval)
returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.worker_processes as w (id, host, pid, label, tasks, running, dead_after)
  values (id, host, pid, label, tasks, running, dead_after)
  on conflict on constraint worker_processes_pkey do update set
    last_seen_at = now(), running = excluded.running, tasks = excluded.tasks, dead_after = excluded.dead_after,
    beating_since = case when w.last_seen_at < now() - gap then now() else w.beating_since end;
$$;
comment on function app_private.heartbeat(text, text, integer, text, text[], integer, interval, interval) is E'A worker process says it is alive, and after how long a silence it is to be counted dead. A silence longer than gap since its last beat restarts its beating_since.';

create or replace function app_private.recover_dead_workers(dead_after interval, caller text)
returns table (worker_id text, label text, released integer, abandoned integer)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_dead app_public.worker_processes;
begin
  -- Only a worker that has itself beaten without a gap for longer than dead_after may judge the
  -- others: after a database outage every heartbeat is old, and the first worker back must not
  -- release the jobs its live peers are still running.
  if not exists (select 1 from app_public.worker_processes w
                 where w.id = caller and w.beating_since <= now() - recover_dead_workers.dead_after
                   and w.last_seen_at > now() - recover_dead_workers.dead_after / 2) then
    return;
  end if;
  -- One recovery at a time across the cluster; the others skip this round.
  if not pg_try_advisory_xact_lock(hashtext('hourglass:recover_dead_workers')) then
    return;
  end if;
  -- Dead by its own threshold and by this worker's: one that beats less often than this one is
  -- not released early.
  for v_dead in
    select * from app_public.worker_processes w where w.last_seen_at < now() - greatest(recover_dead_workers.dead_after, w.dead_after) for update skip locked
  loop
    worker_id := v_dead.id;
    label := v_dead.label;
    select count(*) into released from graphile_worker.jobs j where j.locked_by = v_dead.id;
    perform graphile_worker.force_unlock_workers(array[v_dead.id]);
    with gone as (
      update app_public.job_runs r set outcome = 'abandoned', finished_at = now(),
        duration_ms = extract(epoch from now() - r.started_at) * 1000,
        error = 'The worker ' || v_dead.label || ' stopped heartbeating (last seen ' || v_dead.last_seen_at || ')'
      -- A newer process that reused the host:pid label (a restarted container) owns the runs that
      -- started after it did.
      where r.outcome = 'running' and r.worker_id = v_dead.label
        and not exists (select 1 from app_public.worker_processes o
                        where o.label = v_dead.label and o.id <> v_dead.id and r.started_at >= o.started_at)
      returning 1
    )
    select count(*) into abandoned from gone;
    delete from app_public.worker_processes w where w.id = v_dead.id;
    return next;
  end loop;
end;
$$;

-- Workers alive: seen within each one's own threshold, or within dead_after when one is given.
-- Defined once, for the overview (and /healthz) and for /metrics.
drop function if exists app_private.workers_alive(interval);
create function app_private.workers_alive(dead_after interval) returns integer
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select count(*)::integer from app_public.worker_processes p
  where p.last_seen_at > now() - coalesce(workers_alive.dead_after, p.dead_after);
$$;
comment on function app_private.workers_alive(interval) is E'Worker processes seen within their own dead_after (WORKER_DEAD_AFTER_MS), or within dead_after when it is not null.';

create or replace function app_hidden.job_health(dead_after interval default null) returns app_public.job_overview
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
  (select app_private.workers_alive(job_health.dead_after) as n) w;
  return v_overview;
end;
$$;
comment on function app_hidden.job_health(interval) is E'The overview for /healthz (called by the API''s own connection, not by clients): queue by state, oldest due job, failures in 24 hours, workers alive (heartbeat within each worker''s own dead_after, or within the dead_after given), scheduler healthy.';

create or replace function app_public.job_overview(dead_after interval default null) returns app_public.job_overview
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.require_admin();
  return app_hidden.job_health(dead_after);
end;
$$;
comment on function app_public.job_overview(interval) is E'Admins: the job system at a glance (per task: the tasks view). The same facts as /healthz. Workers alive are those seen within their own WORKER_DEAD_AFTER_MS, or within deadAfter when it is given.';

create or replace function app_hidden.metrics_snapshot(dead_after interval default null) returns jsonb
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select jsonb_build_object(
    'jobs', coalesce((
      select jsonb_agg(jsonb_build_array(m.task_identifier, m.outcome, m.runs, m.duration_sum_ms, m.duration_buckets,
                                         m.lateness_count, m.lateness_sum_ms, m.lateness_buckets))
      from (
        select j.task_identifier, j.outcome, sum(j.runs) as runs, sum(j.duration_sum_ms) as duration_sum_ms,
               array(select sum(b) from app_private.job_metrics j2, unnest(j2.duration_buckets) with ordinality u(b, i)
                     where j2.task_identifier = j.task_identifier and j2.outcome = j.outcome group by i order by i) as duration_buckets,
               sum(j.lateness_count) as lateness_count, sum(j.lateness_sum_ms) as lateness_sum_ms,
               array(select sum(b) from app_private.job_metrics j2, unnest(j2.lateness_buckets) with ordinality u(b, i)
                     where j2.task_identifier = j.task_identifier and j2.outcome = j.outcome group by i order by i) as lateness_buckets
        from app_private.job_metrics j
        group by j.task_identifier, j.outcome
      ) m), '[]'),
    'counters', coalesce((
      select jsonb_agg(jsonb_build_array(c.name, c.label, c.value))
      from (select name, label, sum(value) as value from app_private.metric_counters group by name, label) c), '[]'),
    'queue', coalesce((
      select jsonb_agg(jsonb_build_array(q.task_identifier, q.state, q.n))
      from (select task_identifier, state, count(*) as n from app_private.job_states group by 1, 2) q), '[]'),
    'workers_alive', app_private.workers_alive(metrics_snapshot.dead_after));
$$;

-- 2. withdrawFromExchange: the caller's place first, then the exchange's state.

create or replace function app_public.withdraw_from_exchange(exchange_id bigint) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_state text;
  v_participant app_public.participants;
begin
  if not exists (select 1 from app_public.participants p
                 where p.exchange_id = withdraw_from_exchange.exchange_id and p.user_id = app_public.current_user_id() and p.withdrawn_at is null) then
    raise exception 'You are not taking part in exchange %', exchange_id using errcode = 'EXNPT';
  end if;
  -- A share lock, which startMatching's row lock waits for and the other way round: nobody withdraws while the draw runs.
  select e.state into v_state from app_public.exchanges e where e.id = withdraw_from_exchange.exchange_id for share;
  if v_state = 'MATCHING' then
    raise exception 'Exchange % is being matched; withdraw once it is done', exchange_id using errcode = 'EXSTA';
  end if;
  update app_public.participants p set withdrawn_at = now()
  where p.exchange_id = withdraw_from_exchange.exchange_id and p.user_id = app_public.current_user_id() and p.withdrawn_at is null
    and v_state is distinct from 'COMPLETED'
  returning * into v_participant;
  if v_participant.id is null then
    raise exception 'You are not taking part in exchange %', exchange_id using errcode = 'EXNPT';
  end if;
  return v_participant;
end;
$$;

-- 3. Authenticator-only: not the visitor's (the schema's default privileges grant it execute).

revoke all on function app_hidden.touch_job_event_listener(text, interval) from public, :DATABASE_VISITOR;
revoke all on function app_hidden.drop_job_event_listener(text) from public, :DATABASE_VISITOR;
