--! Previous: sha1:4ed12741f476ec9d003ff3e6cdaca51bb8c2b637
--! Hash: sha1:bec2c9c1ad71f57d339ffcb213560b464da9dc82
--! Message: worker heartbeats and crash recovery

-- Worker heartbeats and crash recovery. Why: graphile-worker releases the jobs of a worker that
-- died (SIGKILL, OOM, a lost machine) only after 4 hours. Each worker process now records a
-- heartbeat every few seconds; any worker checks, one at a time across the cluster (an advisory
-- lock), for workers silent longer than WORKER_DEAD_AFTER_MS, releases their jobs with
-- graphile_worker.force_unlock_workers so they run again within seconds, marks their running
-- history rows abandoned and removes their heartbeat. A live worker's jobs are never touched.

drop function if exists app_private.recover_dead_workers(interval, text);
drop function if exists app_private.recover_dead_workers(interval);
drop function if exists app_private.forget_worker(text);
drop function if exists app_private.heartbeat(text, text, integer, text, text[], integer, interval);
drop function if exists app_private.heartbeat(text, text, integer, text, text[], integer);
drop table if exists app_public.worker_processes cascade;

create table app_public.worker_processes (
  id text primary key,
  host text not null,
  pid integer not null,
  label text not null,
  tasks text[],
  running integer not null default 0,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  -- Since when it has beaten without a gap: a worker that itself just came back (after a
  -- database outage, say) must not declare the others dead before they had a chance to beat.
  beating_since timestamptz not null default now()
);
create index worker_processes_last_seen_at_idx on app_public.worker_processes (last_seen_at);
alter table app_public.worker_processes enable row level security;
create policy select_as_admin on app_public.worker_processes for select using (app_hidden.current_user_is_admin());
grant select on app_public.worker_processes to :DATABASE_VISITOR;
comment on table app_public.worker_processes is E'Worker processes alive (or recently so): each heartbeats every few seconds. id is graphile-worker''s pool id (what locked_by shows); label is host:pid as in job_runs.worker_id. Admins only.';
comment on column app_public.worker_processes.tasks is E'The tasks it serves; null for all.';
comment on column app_public.worker_processes.running is E'Jobs it was running at its last heartbeat.';

create function app_private.heartbeat(id text, host text, pid integer, label text, tasks text[], running integer, gap interval)
returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.worker_processes as w (id, host, pid, label, tasks, running)
  values (id, host, pid, label, tasks, running)
  on conflict on constraint worker_processes_pkey do update set
    last_seen_at = now(), running = excluded.running, tasks = excluded.tasks,
    beating_since = case when w.last_seen_at < now() - gap then now() else w.beating_since end;
$$;
comment on function app_private.heartbeat(text, text, integer, text, text[], integer, interval) is E'A worker process says it is alive. A silence longer than gap since its last beat restarts its beating_since.';

create function app_private.forget_worker(id text) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_public.worker_processes w where w.id = forget_worker.id;
$$;
comment on function app_private.forget_worker(text) is E'A worker process that stopped cleanly removes its heartbeat.';

create function app_private.recover_dead_workers(dead_after interval, caller text)
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
                 where w.id = caller and w.beating_since <= now() - dead_after and w.last_seen_at > now() - dead_after / 2) then
    return;
  end if;
  -- One recovery at a time across the cluster; the others skip this round.
  if not pg_try_advisory_xact_lock(hashtext('hourglass:recover_dead_workers')) then
    return;
  end if;
  for v_dead in
    select * from app_public.worker_processes w where w.last_seen_at < now() - dead_after for update skip locked
  loop
    worker_id := v_dead.id;
    label := v_dead.label;
    select count(*) into released from graphile_worker.jobs j where j.locked_by = v_dead.id;
    perform graphile_worker.force_unlock_workers(array[v_dead.id]);
    with gone as (
      update app_public.job_runs r set outcome = 'abandoned', finished_at = now(),
        duration_ms = extract(epoch from now() - r.started_at) * 1000,
        error = 'The worker ' || v_dead.label || ' stopped heartbeating (last seen ' || v_dead.last_seen_at || ')'
      -- started_at: a new process that reused the host:pid label is not this one.
      where r.outcome = 'running' and r.worker_id = v_dead.label and r.started_at <= v_dead.last_seen_at
      returning 1
    )
    select count(*) into abandoned from gone;
    delete from app_public.worker_processes w where w.id = v_dead.id;
    return next;
  end loop;
end;
$$;
comment on function app_private.recover_dead_workers(interval, text) is E'Releases the jobs of worker processes whose last heartbeat is older than dead_after (so they run again at once), marks their running history rows abandoned and removes them. Only a caller (pool id) that has beaten without a gap for longer than dead_after does anything, and at most one at a time. Returns one row per recovered worker.';
