--! Previous: sha1:089138840f4066cf45df75162e8ba203882171c5
--! Hash: sha1:c143605bc3fa5e12bec00c327d6ecd933e1cd7d1
--! Message: pausable schedules

-- Schedules you can pause. Why: graphile-worker's crontab has no runtime pause; the source
-- system's task API could pause and resume a periodic task. Each crontab entry is recorded here
-- at start-up (never deleted, like the task catalogue); an admin pauses or resumes it in SQL or
-- GraphQL, audited; every worker sees it at the entry's next tick (the task wrapper checks before
-- running a crontab job) and records the paused tick as skipped. Resuming does not replay the
-- paused ticks.

drop function if exists app_public.resume_schedule(text, text);
drop function if exists app_public.pause_schedule(text, text);
drop function if exists app_private.sync_schedules(jsonb);
drop table if exists app_public.schedules cascade;

create table app_public.schedules (
  id text primary key,
  pattern text not null,
  task_identifier text not null,
  options jsonb not null default '{}',
  synced_at timestamptz not null default now(),
  paused_at timestamptz,
  paused_by bigint references app_public.users (id) on delete set null,
  pause_reason text check (length(pause_reason) <= 1000)
);
create index schedules_paused_by_idx on app_public.schedules (paused_by);
alter table app_public.schedules enable row level security;
create policy select_as_admin on app_public.schedules for select using (app_hidden.current_user_is_admin());
grant select on app_public.schedules to :DATABASE_VISITOR;
comment on table app_public.schedules is E'The crontab''s entries (id=, pattern, task, options), recorded at start-up, and whether an admin paused them. A paused entry''s ticks are recorded as skipped in the job history. Admins only.';
comment on column app_public.schedules.pattern is E'minute hour day-of-month month day-of-week, UTC.';

create function app_private.sync_schedules(entries jsonb) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.schedules (id, pattern, task_identifier, options, synced_at)
  select e->>'id', e->>'pattern', e->>'task', coalesce(e->'options', '{}'), now()
  from jsonb_array_elements(entries) e
  on conflict (id) do update set pattern = excluded.pattern, task_identifier = excluded.task_identifier,
    options = excluded.options, synced_at = now();
$$;
comment on function app_private.sync_schedules(jsonb) is E'Records the crontab''s entries at start-up; never deletes (an older process in a rolling deploy may still run a removed entry). Pauses are kept.';

create function app_public.pause_schedule(schedule_id text, reason text default null) returns app_public.schedules
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_schedule app_public.schedules;
begin
  update app_public.schedules s set paused_at = coalesce(s.paused_at, now()), paused_by = coalesce(s.paused_by, v_actor),
    pause_reason = coalesce(pause_schedule.reason, s.pause_reason)
  where s.id = schedule_id returning * into v_schedule;
  if not found then
    raise exception 'No schedule %', schedule_id using errcode = 'SCNFD';
  end if;
  insert into app_public.admin_actions (actor_id, action, target, reason) values (v_actor, 'pause_schedule', 'schedule:' || schedule_id, reason);
  return v_schedule;
end;
$$;
comment on function app_public.pause_schedule(text, text) is E'Admins: pauses a crontab entry from its next tick on, on every worker, without a restart. Audited.';

create function app_public.resume_schedule(schedule_id text, reason text default null) returns app_public.schedules
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_schedule app_public.schedules;
begin
  update app_public.schedules s set paused_at = null, paused_by = null, pause_reason = null
  where s.id = schedule_id returning * into v_schedule;
  if not found then
    raise exception 'No schedule %', schedule_id using errcode = 'SCNFD';
  end if;
  insert into app_public.admin_actions (actor_id, action, target, reason) values (v_actor, 'resume_schedule', 'schedule:' || schedule_id, reason);
  return v_schedule;
end;
$$;
comment on function app_public.resume_schedule(text, text) is E'Admins: resumes a paused crontab entry from its next tick (the paused ticks are not replayed). Audited.';
