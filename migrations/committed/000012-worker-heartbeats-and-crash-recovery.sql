--! Previous: sha1:4ed12741f476ec9d003ff3e6cdaca51bb8c2b637
--! Hash: sha1:5ea8bf19512fd071aabf9e1b031ff7bd1194ef4f
--! Message: worker heartbeats and crash recovery

-- Worker heartbeats and crash recovery. Why: graphile-worker releases the jobs of a worker that
-- died (SIGKILL, OOM, a lost machine) only after 4 hours. Each worker process now records a
-- heartbeat every few seconds; any worker checks, one at a time across the cluster (an advisory
-- lock), for workers silent longer than WORKER_DEAD_AFTER_MS, releases their jobs with
-- graphile_worker.force_unlock_workers so they run again within seconds, marks their running
-- history rows abandoned and removes their heartbeat. A live worker's jobs are never touched.

drop function if exists app_private.recover_dead_workers(interval);
drop function if exists app_private.forget_worker(text);
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
  last_seen_at timestamptz not null default now()
);
create index worker_processes_last_seen_at_idx on app_public.worker_processes (last_seen_at);
alter table app_public.worker_processes enable row level security;
create policy select_as_admin on app_public.worker_processes for select using (app_hidden.current_user_is_admin());
grant select on app_public.worker_processes to :DATABASE_VISITOR;
comment on table app_public.worker_processes is E'Worker processes alive (or recently so): each heartbeats every few seconds. id is graphile-worker''s pool id (what locked_by shows); label is host:pid as in job_runs.worker_id. Admins only.';
comment on column app_public.worker_processes.tasks is E'The tasks it serves; null for all.';
comment on column app_public.worker_processes.running is E'Jobs it was running at its last heartbeat.';

create function app_private.heartbeat(id text, host text, pid integer, label text, tasks text[], running integer) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.worker_processes (id, host, pid, label, tasks, running)
  values (id, host, pid, label, tasks, running)
  on conflict on constraint worker_processes_pkey do update set last_seen_at = now(), running = excluded.running, tasks = excluded.tasks;
$$;
comment on function app_private.heartbeat(text, text, integer, text, text[], integer) is E'A worker process says it is alive.';

create function app_private.forget_worker(id text) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_public.worker_processes w where w.id = forget_worker.id;
$$;
comment on function app_private.forget_worker(text) is E'A worker process that stopped cleanly removes its heartbeat.';

create function app_private.recover_dead_workers(dead_after interval)
returns table (worker_id text, label text, released integer, abandoned integer)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_dead app_public.worker_processes;
begin
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
      where r.outcome = 'running' and r.worker_id = v_dead.label
      returning 1
    )
    select count(*) into abandoned from gone;
    delete from app_public.worker_processes w where w.id = v_dead.id;
    return next;
  end loop;
end;
$$;
comment on function app_private.recover_dead_workers(interval) is E'Releases the jobs of worker processes whose last heartbeat is older than dead_after (so they run again at once), marks their running history rows abandoned and removes them. At most one caller at a time does the work. Returns one row per recovered worker.';
