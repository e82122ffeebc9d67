--! Previous: sha1:bec2c9c1ad71f57d339ffcb213560b464da9dc82
--! Hash: sha1:2249b276a23fd39173d6df204c0f322250ea85ae
--! Message: job control

-- Job control for admins, in SQL and GraphQL. Why: graphile-worker has no dashboard API; an
-- operator needs to see what is queued, scheduled, running and failed (by task, state and key
-- prefix: "everything for offer 42") and to retry, cancel or reschedule a job -- but never a job a
-- worker is running, and never half-done. Every action is checked (admins only) and audited (who,
-- what, when, why) in the same transaction. Only graphile-worker's public view and admin
-- functions are used.

drop function if exists app_public.reschedule_job(bigint, timestamptz, text);
drop function if exists app_public.cancel_job(bigint, text);
drop function if exists app_public.retry_job(bigint, text);
drop function if exists app_private.job_for_action(bigint, text);
drop function if exists app_hidden.require_admin();
drop view if exists app_public.queued_jobs;
drop table if exists app_public.admin_actions cascade;

create table app_public.admin_actions (
  id bigint primary key generated always as identity,
  actor_id bigint references app_public.users (id) on delete set null,
  action text not null,
  target text not null,
  reason text check (length(reason) <= 1000),
  details jsonb not null default '{}',
  created_at timestamptz not null default now()
);
create index admin_actions_created_at_idx on app_public.admin_actions (created_at desc);
create index admin_actions_actor_id_idx on app_public.admin_actions (actor_id);
alter table app_public.admin_actions enable row level security;
create policy select_as_admin on app_public.admin_actions for select using (app_hidden.current_user_is_admin());
grant select on app_public.admin_actions to :DATABASE_VISITOR;
comment on table app_public.admin_actions is E'Audit of the job control plane: who did what to which job or schedule, when and why. Admins only.';

create function app_hidden.require_admin() returns bigint
language plpgsql stable
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not app_hidden.current_user_is_admin() then
    raise exception 'Administrators only' using errcode = 'ADMIN';
  end if;
  return app_public.current_user_id();
end;
$$;
comment on function app_hidden.require_admin() is E'Raises ADMIN unless the signed-in user is an administrator; returns their id.';

-- The queue as admins see it (graphile-worker's public view, with a state). A view runs with its
-- owner's rights, so the admin check is part of it.
create view app_public.queued_jobs with (security_barrier) as
  select j.id, j.task_identifier, j.queue_name, j.key, j.priority, j.run_at, j.attempts, j.max_attempts,
         j.last_error, j.locked_at, j.locked_by, j.created_at, j.updated_at,
         case
           when j.locked_at is not null and j.locked_at > now() - interval '4 hours' then 'running'
           when j.attempts >= j.max_attempts then 'failed'
           when j.run_at > now() then 'scheduled'
           else 'queued'
         end as state
  from graphile_worker.jobs j
  where app_hidden.current_user_is_admin();
grant select on app_public.queued_jobs to :DATABASE_VISITOR;
comment on view app_public.queued_jobs is E'@primaryKey id\nJobs in the queue with their state: queued (due), scheduled (run_at in the future), running (locked by a worker), failed (out of attempts; retry or cancel it). Filter by taskIdentifier, state or key (e.g. startsWith "offers:42:"). Admins only; others see no rows.';
comment on column app_public.queued_jobs.state is E'queued, scheduled, running or failed.';

create function app_private.job_for_action(job_id bigint, action text) returns app_public.queued_jobs
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_job app_public.queued_jobs;
begin
  select * into v_job from app_public.queued_jobs j where j.id = job_id;
  if not found then
    raise exception 'Job % not found', job_id using errcode = 'JBNFD';
  end if;
  if v_job.state = 'running' then
    raise exception 'Job % is running on %; it cannot be %', job_id, v_job.locked_by, action using errcode = 'JBRUN';
  end if;
  return v_job;
end;
$$;

create function app_public.retry_job(job_id bigint, reason text default null) returns app_public.queued_jobs
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_job app_public.queued_jobs := app_private.job_for_action(job_id, 'retried');
begin
  -- reschedule_jobs skips a job locked meanwhile: then nothing changed, and nothing is audited.
  if not exists (select 1 from graphile_worker.reschedule_jobs(array[job_id], run_at := now(), attempts := 0)) then
    raise exception 'Job % is running; it cannot be retried', job_id using errcode = 'JBRUN';
  end if;
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'retry_job', 'job:' || job_id, reason, jsonb_build_object('task', v_job.task_identifier, 'key', v_job.key, 'attempts', v_job.attempts));
  select * into v_job from app_public.queued_jobs j where j.id = job_id;
  return v_job;
end;
$$;
comment on function app_public.retry_job(bigint, text) is E'Admins: runs a job again now with its attempts reset (typically a failed one). Refused for a running job (JBRUN). Audited.';

create function app_public.cancel_job(job_id bigint, reason text default null) returns boolean
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_job app_public.queued_jobs := app_private.job_for_action(job_id, 'cancelled');
begin
  if not exists (select 1 from graphile_worker.complete_jobs(array[job_id])) then
    raise exception 'Job % is running; it cannot be cancelled', job_id using errcode = 'JBRUN';
  end if;
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'cancel_job', 'job:' || job_id, reason, jsonb_build_object('task', v_job.task_identifier, 'key', v_job.key, 'state', v_job.state));
  return true;
end;
$$;
comment on function app_public.cancel_job(bigint, text) is E'Admins: removes a job that is not running (queued, scheduled or failed). Refused for a running job (JBRUN). Audited.';

create function app_public.reschedule_job(job_id bigint, run_at timestamptz, reason text default null) returns app_public.queued_jobs
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_job app_public.queued_jobs := app_private.job_for_action(job_id, 'rescheduled');
begin
  if run_at is null then
    raise exception 'A new run time is required' using errcode = 'JBRAT';
  end if;
  -- A failed job moved in time gets its attempts back, or it would never run.
  if not exists (select 1 from graphile_worker.reschedule_jobs(array[job_id], run_at := reschedule_job.run_at,
                   attempts := case when v_job.state = 'failed' then 0 end)) then
    raise exception 'Job % is running; it cannot be rescheduled', job_id using errcode = 'JBRUN';
  end if;
  perform app_private.note_wakeups(array[reschedule_job.run_at]);
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'reschedule_job', 'job:' || job_id, reason,
          jsonb_build_object('task', v_job.task_identifier, 'key', v_job.key, 'from', v_job.run_at, 'to', reschedule_job.run_at));
  select * into v_job from app_public.queued_jobs j where j.id = job_id;
  return v_job;
end;
$$;
comment on function app_public.reschedule_job(bigint, timestamptz, text) is E'Admins: moves a job that is not running to run_at (a failed one gets its attempts back). Refused for a running job (JBRUN). Audited.';
