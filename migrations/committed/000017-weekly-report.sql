--! Previous: sha1:d9a9bdff954499e0b6717432de5cc2df1d0c848b
--! Hash: sha1:75e6375e6e6a67a2c7c19544759147e34839899f
--! Message: weekly report

-- The weekly report. Why: the source system's admins got a Monday summary of the job system and the
-- business; Celery beat sent it once, or twice after a restart. Every Monday at 08:00 UTC each
-- admin gets one email for the week before (Monday 00:00 to Monday 00:00 UTC): jobs by task and
-- outcome, the slowest tasks, failures, offers by what happened to them, exchanges completed. The
-- email log's key carries the ISO week, so a retried or duplicated run sends nothing more.

drop function if exists app_private.queue_weekly_reports(timestamptz);
drop function if exists app_private.weekly_report(timestamptz, timestamptz);

create function app_private.weekly_report(week_start timestamptz, week_end timestamptz) returns jsonb
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  with runs as (
    select r.task_identifier, r.outcome, r.duration_ms, r.error, r.started_at
    from app_public.job_runs r
    -- Finished runs: a run still going has no outcome yet.
    where r.started_at >= week_start and r.started_at < week_end and r.outcome <> 'running'
  )
  select jsonb_build_object(
    'runs', (select count(*) from runs),
    'by_task', coalesce((
      select jsonb_agg(jsonb_build_object('task', t.task_identifier, 'total', t.total, 'outcomes', t.outcomes) order by t.total desc, t.task_identifier)
      from (
        select o.task_identifier, sum(o.n) as total, jsonb_object_agg(o.outcome, o.n order by o.outcome) as outcomes
        from (select task_identifier, outcome, count(*) as n from runs group by 1, 2) o
        group by o.task_identifier
      ) t), '[]'),
    'slowest', coalesce((
      select jsonb_agg(s order by s.p95_ms desc, s.task)
      from (
        select task_identifier as task, count(*) as runs,
               round(avg(duration_ms)::numeric, 1) as avg_ms,
               round(percentile_cont(0.95) within group (order by duration_ms)::numeric, 1) as p95_ms,
               round(max(duration_ms)::numeric, 1) as max_ms
        from runs where duration_ms is not null
        group by task_identifier
        order by p95_ms desc, task_identifier
        limit 5
      ) s), '[]'),
    'failures', coalesce((
      select jsonb_agg(f order by f.failures desc, f.task)
      from (
        select task_identifier as task, count(*) as failures,
               (array_agg(left(coalesce(error, outcome), 200) order by started_at desc))[1] as last_error
        from runs where outcome in ('failed_retrying', 'failed_permanently', 'timed_out', 'abandoned')
        group by task_identifier
        order by failures desc, task_identifier
        limit 10
      ) f), '[]'),
    'offers', (
      select jsonb_build_object(
        'sent', count(*) filter (where o.sent_at >= week_start and o.sent_at < week_end),
        'accepted', count(*) filter (where o.accepted_at >= week_start and o.accepted_at < week_end),
        'rejected', count(*) filter (where o.rejected_at >= week_start and o.rejected_at < week_end),
        'withdrawn', count(*) filter (where o.withdrawn_at >= week_start and o.withdrawn_at < week_end),
        'expired', count(*) filter (where o.expired_at >= week_start and o.expired_at < week_end))
      from app_public.offers o),
    'exchanges_completed', (
      select count(*) from app_public.exchanges e
      where e.state = 'COMPLETED' and e.completed_at >= week_start and e.completed_at < week_end));
$$;
comment on function app_private.weekly_report(timestamptz, timestamptz) is E'The weekly report''s figures for [week_start, week_end): finished job runs by task and outcome, the five slowest tasks by p95 duration, the ten tasks with most failures (with the last error), offers sent/accepted/rejected/withdrawn/expired, exchanges completed.';

create function app_private.queue_weekly_reports(as_of timestamptz, out queued integer, out week text)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- The week that ended at the last Monday 00:00 UTC at or before as_of.
  v_end timestamptz := date_trunc('week', as_of at time zone 'UTC') at time zone 'UTC';
  v_start timestamptz := v_end - interval '7 days';
  v_week text := to_char(v_start at time zone 'UTC', 'IYYY-"W"IW');
  v_report jsonb := app_private.weekly_report(v_start, v_end);
  v_data jsonb;
begin
  v_data := jsonb_build_object(
    'week', v_week,
    'from', to_char(v_start at time zone 'UTC', 'YYYY-MM-DD'),
    'to', to_char(v_end at time zone 'UTC' - interval '1 day', 'YYYY-MM-DD'),
    'runs', v_report->>'runs',
    'by_task', coalesce((
      select string_agg(format('%s: %s runs (%s)', t->>'task', t->>'total',
               (select string_agg(format('%s %s', o.value, o.key), ', ' order by o.key) from jsonb_each_text(t->'outcomes') o)), E'\n')
      from jsonb_array_elements(v_report->'by_task') t), 'No jobs ran.'),
    'slowest', coalesce((
      select string_agg(format('%s: p95 %s ms, max %s ms, average %s ms over %s runs', s->>'task', s->>'p95_ms', s->>'max_ms', s->>'avg_ms', s->>'runs'), E'\n')
      from jsonb_array_elements(v_report->'slowest') s), 'No jobs ran.'),
    'failures', coalesce((
      select string_agg(format('%s: %s failed runs; last: %s', f->>'task', f->>'failures', f->>'last_error'), E'\n')
      from jsonb_array_elements(v_report->'failures') f), 'No failures.'),
    'offers', format('%s sent, %s accepted, %s declined, %s withdrawn, %s expired',
      v_report#>>'{offers,sent}', v_report#>>'{offers,accepted}', v_report#>>'{offers,rejected}',
      v_report#>>'{offers,withdrawn}', v_report#>>'{offers,expired}'),
    'exchanges_completed', v_report->>'exchanges_completed');
  week := v_week;
  select count(app_private.queue_email('weekly_report:user:' || u.id || ':' || v_week, 'weekly_report', u.email, v_data))::integer
  into queued
  from app_public.users u
  where u.is_admin;
end;
$$;
comment on function app_private.queue_weekly_reports(timestamptz) is E'Queues the weekly report for the week (Monday to Sunday, UTC) that ended at or before as_of: one email per admin, at most once per admin and week whatever the number of runs. Returns how many were newly queued and which ISO week it was.';
