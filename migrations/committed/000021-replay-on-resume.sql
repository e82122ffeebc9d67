--! Previous: sha1:6dd2d903719a9ab79ddb54834d3cba9336dbfe86
--! Hash: sha1:5d8bed8630e74340b98f24b0965ee7cb9bd41a7d
--! Message: replay on resume

-- Resuming a schedule can replay what the pause skipped. Why: the issue (and the source system's
-- task API) resume without replaying the paused period "unless asked": pausing a nightly purge
-- during an incident should not lose the nights it missed when the operator wants them back.
-- resume_schedule(id, reason, replay => true) enqueues one job per tick recorded as skipped since
-- the pause began, each with its own tick time (backfilled), so a task that works per period (the
-- digest's day, the report's week) does the period it missed. Without replay nothing changes.

drop function if exists app_public.resume_schedule(text, text, boolean);
drop function if exists app_public.resume_schedule(text, text);

create function app_public.resume_schedule(schedule_id text, reason text default null, replay boolean default false) returns app_public.schedules
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_actor bigint := app_hidden.require_admin();
  v_schedule app_public.schedules;
  v_paused_at timestamptz;
  v_replayed integer := 0;
begin
  select s.paused_at into v_paused_at from app_public.schedules s where s.id = schedule_id for update;
  update app_public.schedules s set paused_at = null, paused_by = null, pause_reason = null
  where s.id = schedule_id returning * into v_schedule;
  if not found then
    raise exception 'No schedule %', schedule_id using errcode = 'SCNFD';
  end if;
  if replay and v_paused_at is not null then
    -- Without a key: the entry's key (cron:<id>) would fold the replayed ticks into one job.
    select count(app_private.add_job(v_schedule.task_identifier,
             (coalesce(v_schedule.payload, '{}') || jsonb_build_object('_cron', jsonb_build_object('ts', t.ts, 'backfilled', true)))::json,
             null, null, v_schedule.options->>'queueName', (v_schedule.options->>'priority')::integer,
             (v_schedule.options->>'maxAttempts')::integer))::integer
    into v_replayed
    from (
      select distinct r.payload->'_cron'->>'ts' as ts
      from app_public.job_runs r
      where r.job_key = 'cron:' || schedule_id and r.outcome = 'skipped' and r.started_at >= v_paused_at
        and r.payload->'_cron'->>'ts' is not null
      order by 1
    ) t;
  end if;
  insert into app_public.admin_actions (actor_id, action, target, reason, details)
  values (v_actor, 'resume_schedule', 'schedule:' || schedule_id, reason,
          case when replay then jsonb_build_object('replayed', v_replayed) else '{}'::jsonb end);
  return v_schedule;
end;
$$;
comment on function app_public.resume_schedule(text, text, boolean) is E'Admins: resumes a paused crontab entry from its next tick. With replay, also runs once each tick the pause skipped (with that tick''s time); without, the paused ticks are not replayed. Audited (with how many were replayed).';
