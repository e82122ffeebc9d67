--! Previous: sha1:82d9f443c443fdf88171bfa94633698357158659
--! Hash: sha1:82c7fbeb51c8e46414b0ebbc4b1bb49d34788bb5
--! Message: metrics counters

-- Counters for /metrics. Why: Prometheus wants totals that only grow and histograms, cheap to
-- read on every scrape; counting app_public.job_runs (a million rows) or the delivery tables per
-- scrape would not be. So the totals are kept as they happen, in small tables a scrape reads in
-- full: job runs by task and outcome with duration and lateness histograms (added by each
-- worker's history writer in the same statement as each batch, from the rows it wrote), abandoned
-- runs (by a trigger, whoever marks them), and email and webhook delivery outcomes (by triggers).
-- Each writer adds to one of eight shards of a row, so writers at work at once rarely wait for
-- each other; a scrape sums the shards. Rows are per task/outcome/shard, so the tables stay small.

drop trigger if exists _900_metrics on app_public.webhook_attempts;
drop trigger if exists _900_metrics on app_public.webhook_deliveries;
drop trigger if exists _900_metrics_insert on app_private.email_deliveries;
drop trigger if exists _900_metrics_update on app_private.email_deliveries;
drop trigger if exists _900_metrics_insert on app_public.job_runs;
drop trigger if exists _900_metrics_update on app_public.job_runs;
drop function if exists app_private.tg_webhook_attempts__metrics();
drop function if exists app_private.tg_webhook_deliveries__metrics();
drop function if exists app_private.tg_email_deliveries__metrics();
drop function if exists app_private.tg_job_runs__abandoned_metrics();
drop function if exists app_private.count_metric(text, text);
drop function if exists app_hidden.metrics_snapshot(interval);
drop table if exists app_private.metric_counters;
drop table if exists app_private.job_metrics;

-- Bucket bounds (milliseconds) are fixed here and in src/metrics/buckets.ts: changing them means
-- a new migration that resets the histograms.
create table app_private.job_metrics (
  task_identifier text not null,
  outcome text not null,
  shard smallint not null check (shard between 0 and 7),
  runs bigint not null default 0,
  duration_sum_ms double precision not null default 0,
  -- Cumulative counts per bound of DURATION_BUCKETS_MS (runs that took at most that long).
  duration_buckets bigint[] not null,
  lateness_count bigint not null default 0,
  lateness_sum_ms double precision not null default 0,
  -- Cumulative counts per bound of LATENESS_BUCKETS_MS (start - run_at).
  lateness_buckets bigint[] not null,
  primary key (task_identifier, outcome, shard)
);
comment on table app_private.job_metrics is E'Totals of finished job runs by task and outcome, with duration and lateness (start - run_at) histograms, for /metrics. Only ever added to.';

create table app_private.metric_counters (
  name text not null,
  label text not null,
  shard smallint not null check (shard between 0 and 7),
  value bigint not null default 0,
  primary key (name, label, shard)
);
comment on table app_private.metric_counters is E'Counters for /metrics: email_deliveries by outcome, webhook_deliveries by final status, webhook_attempts by result. Only ever added to.';

create function app_private.count_metric(name text, label text) returns void
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.metric_counters as c (name, label, shard, value)
  values (count_metric.name, count_metric.label, floor(random() * 8)::smallint, 1)
  on conflict (name, label, shard) do update set value = c.value + 1;
$$;

-- Abandoned runs: marked by crash recovery (an update) or written so by a worker that was forced
-- to stop (through its history writer, which counts every other outcome itself).
create function app_private.tg_job_runs__abandoned_metrics() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_private.job_metrics as m (task_identifier, outcome, shard, runs, duration_buckets, lateness_buckets)
  values (new.task_identifier, 'abandoned', floor(random() * 8)::smallint, 1,
          array_fill(0::bigint, array[15]), array_fill(0::bigint, array[15]))
  on conflict (task_identifier, outcome, shard) do update set runs = m.runs + 1;
  return null;
end;
$$;
create trigger _900_metrics_insert after insert on app_public.job_runs
  for each row when (new.outcome = 'abandoned') execute function app_private.tg_job_runs__abandoned_metrics();
create trigger _900_metrics_update after update of outcome on app_public.job_runs
  for each row when (new.outcome = 'abandoned' and old.outcome is distinct from 'abandoned')
  execute function app_private.tg_job_runs__abandoned_metrics();

create function app_private.tg_email_deliveries__metrics() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.count_metric('email_deliveries', case
    when new.state = 'sent' then 'sent'
    when new.last_error = 'address suppressed' then 'suppressed'
    when new.last_error like 'interrupted while sending%' then 'interrupted'
    else 'failed' end);
  return null;
end;
$$;
create trigger _900_metrics_insert after insert on app_private.email_deliveries
  for each row when (new.state in ('sent', 'failed')) execute function app_private.tg_email_deliveries__metrics();
create trigger _900_metrics_update after update of state on app_private.email_deliveries
  for each row when (new.state in ('sent', 'failed') and old.state is distinct from new.state)
  execute function app_private.tg_email_deliveries__metrics();

create function app_private.tg_webhook_deliveries__metrics() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.count_metric('webhook_deliveries', new.status);
  return null;
end;
$$;
create trigger _900_metrics after update of status on app_public.webhook_deliveries
  for each row when (new.status in ('delivered', 'failed') and old.status is distinct from new.status)
  execute function app_private.tg_webhook_deliveries__metrics();

create function app_private.tg_webhook_attempts__metrics() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.count_metric('webhook_attempts', case
    when new.status_code is null then 'error'
    else (new.status_code / 100) || 'xx' end);
  return null;
end;
$$;
create trigger _900_metrics after insert on app_public.webhook_attempts
  for each row execute function app_private.tg_webhook_attempts__metrics();

-- What a scrape reads: the summed counters, the queue by task and state, and workers alive.
-- Called by the API's own connection (the authenticator), never by clients.
create function app_hidden.metrics_snapshot(dead_after interval default '30 seconds') returns jsonb
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
    'workers_alive', (select count(*) from app_public.worker_processes p where p.last_seen_at > now() - dead_after));
$$;
revoke all on function app_hidden.metrics_snapshot(interval) from public, :DATABASE_VISITOR;
grant execute on function app_hidden.metrics_snapshot(interval) to :DATABASE_AUTHENTICATOR;
comment on function app_hidden.metrics_snapshot(interval) is E'Everything /metrics shows, as JSON: job run totals and histograms by task and outcome, delivery counters, the queue by task and state, workers alive. Reads the small metrics tables and the queue; never the history.';
