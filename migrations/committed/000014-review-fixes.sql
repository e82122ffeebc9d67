--! Previous: sha1:2249b276a23fd39173d6df204c0f322250ea85ae
--! Hash: sha1:089138840f4066cf45df75162e8ba203882171c5
--! Message: review fixes

-- Fixes from a review of the offers, exchanges, wake-up and webhook migrations. Why, one by one:
-- * Gift exchanges were joinable by anyone who guessed a sequential id: joining now needs the
--   exchange's invite code (random, shown to the organiser and participants).
-- * Withdrawing while the draw runs could leave a withdrawn participant matched: refused while
--   MATCHING (EXSTA).
-- * Editing an exchange removed a reminder that was due but not yet run: a reminder job is now
--   removed only when its day was dropped or its time changed.
-- * Wake-up slots are inserted in a fixed order, so two transactions cannot deadlock on them.
-- * Crash recovery marked abandoned only the runs that started before the dead worker's last
--   heartbeat, leaving later ones "running"; now a run is the dead worker's unless a newer process
--   with the same host:pid label started before it.
-- * A delivery whose job had failed permanently kept a job with its key, so the sweep never
--   re-found it: a failed job no longer counts (add_job replaces it).

drop function if exists app_public.join_exchange(bigint, text, text);

alter table app_public.exchanges add column if not exists invite_code text not null
  default encode(public.gen_random_bytes(12), 'hex') check (invite_code ~ '^[0-9a-f]{24}$');
comment on column app_public.exchanges.invite_code is E'What a person needs, with the exchange id, to join (joinExchange). Visible to the organiser and participants.';

drop function if exists app_public.join_exchange(bigint, text);
create function app_public.join_exchange(exchange_id bigint, display_name text, invite_code text) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
  v_participant app_public.participants;
begin
  if app_public.current_user_id() is null then
    raise exception 'Sign in to join an exchange' using errcode = 'EXPRM';
  end if;
  select * into v_exchange from app_public.exchanges e where e.id = join_exchange.exchange_id for share;
  -- The same answer for a wrong code as for no exchange: ids are not secret, codes are.
  if not found or v_exchange.invite_code is distinct from join_exchange.invite_code then
    raise exception 'Exchange % not found', exchange_id using errcode = 'EXNFD';
  end if;
  if v_exchange.state <> 'REGISTRATION_OPEN' then
    raise exception 'Exchange % is not open for registration', exchange_id using errcode = 'EXSTA';
  end if;
  if coalesce(length(btrim(display_name)), 0) not between 1 and 100 then
    raise exception 'A display name of 1 to 100 characters is required' using errcode = 'EXNAM';
  end if;
  insert into app_public.participants (exchange_id, user_id, display_name)
  values (join_exchange.exchange_id, app_public.current_user_id(), btrim(display_name))
  on conflict on constraint participants_exchange_id_user_id_key do update set display_name = excluded.display_name, withdrawn_at = null
    where app_public.participants.withdrawn_at is not null
  returning * into v_participant;
  if v_participant.id is null then
    raise exception 'You have already joined exchange %', exchange_id using errcode = 'EXJND';
  end if;
  return v_participant;
end;
$$;
comment on function app_public.join_exchange(bigint, text, text) is E'The signed-in user joins an exchange while registration is open (or rejoins after withdrawing), with the exchange''s invite code.';

create or replace function app_public.withdraw_from_exchange(exchange_id bigint) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_state text;
  v_participant app_public.participants;
begin
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

create or replace function app_private.exchange_job_changes(n app_public.exchanges, o app_public.exchanges)
returns table (identifier text, job_key text, run_at timestamptz, payload json, remove boolean)
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  -- Matching starts.
  select 'exchanges__match', 'exchanges:' || n.id || ':match', null::timestamptz, json_build_object('id', n.id), false
  where n.state = 'MATCHING' and o.state is distinct from 'MATCHING'
  union all
  -- Reminders to (re)schedule: entering MATCHED, or a day added, or its time changed, while
  -- MATCHED. Those whose time has passed are not scheduled.
  select 'exchanges__send_reminders', 'exchanges:' || n.id || ':reminder:' || d,
         app_public.exchange_reminder_at(n.exchange_date, n.timezone, d), json_build_object('id', n.id, 'days', d), false
  from unnest(n.reminder_days) d
  where n.state = 'MATCHED'
    and (o.state is distinct from 'MATCHED' or not (d = any (o.reminder_days))
         or app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) is distinct from app_public.exchange_reminder_at(o.exchange_date, o.timezone, d))
    and app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) > now()
  union all
  -- Reminders scheduled before that no longer stand: leaving MATCHED, a day removed, or its time
  -- changed to one that has passed. (A due reminder whose time did not change keeps its job.)
  select null, 'exchanges:' || o.id || ':reminder:' || d, null, null, true
  from unnest(o.reminder_days) d
  where o.state = 'MATCHED'
    and (n.state is distinct from 'MATCHED'
         or not (d = any (n.reminder_days))
         or (app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) is distinct from app_public.exchange_reminder_at(o.exchange_date, o.timezone, d)
             and app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) <= now()))
  union all
  -- Auto-completion at the exchange date.
  select 'exchanges__complete', 'exchanges:' || n.id || ':complete', n.exchange_date, json_build_object('id', n.id), false
  where n.state = 'MATCHED' and (o.state is distinct from 'MATCHED' or n.exchange_date is distinct from o.exchange_date)
  union all
  select null, 'exchanges:' || o.id || ':complete', null, null, true
  where o.state = 'MATCHED' and n.state is distinct from 'MATCHED'
  union all
  -- The purge warning (23 days after completion) and the purge (30 days).
  select t.identifier, 'exchanges:' || n.id || ':' || t.purpose, n.completed_at + t.after, json_build_object('id', n.id), false
  from (values ('exchanges__send_purge_warning', 'purge_warning', interval '23 days'),
               ('exchanges__purge', 'purge', interval '30 days')) t (identifier, purpose, after)
  where n.state = 'COMPLETED' and (o.state is distinct from 'COMPLETED' or n.completed_at is distinct from o.completed_at)
  union all
  select null, 'exchanges:' || o.id || ':' || purpose, null, null, true
  from unnest(array['purge_warning', 'purge']) purpose
  where o.state = 'COMPLETED' and n.state is distinct from 'COMPLETED';
$$;

create or replace function app_private.note_wakeups(run_ats timestamptz[]) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new integer;
begin
  -- In order: two transactions inserting overlapping slots then lock them in the same order.
  insert into app_private.job_wakeups (at)
  select distinct to_timestamp(ceil(extract(epoch from r) * 100) / 100)
  from unnest(run_ats) r
  where r > now()
  order by 1
  on conflict (at) do nothing;
  get diagnostics v_new = row_count;
  if v_new > 0 then
    perform pg_notify('hourglass:wake', '');
  end if;
end;
$$;

create or replace function app_private.sweep_stranded_deliveries(batch_size integer, out requeued integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Pending, due for a minute, and no live job (none, or one that failed for good): lost.
  with stranded as (
    select d.id from app_public.webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now() - interval '1 minute'
      and not exists (select 1 from graphile_worker.jobs j
                      where j.key = 'webhook_deliveries:' || d.id || ':deliver' and j.attempts < j.max_attempts)
    order by d.next_attempt_at
    limit batch_size
  )
  select count(app_private.add_job('webhooks__deliver', json_build_object('deliveryId', s.id),
           job_key := 'webhook_deliveries:' || s.id || ':deliver'))::integer
  into requeued from stranded s;
  remaining := case when requeued < batch_size then 0 else (
    select count(*) from app_public.webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now() - interval '1 minute'
      and not exists (select 1 from graphile_worker.jobs j
                      where j.key = 'webhook_deliveries:' || d.id || ':deliver' and j.attempts < j.max_attempts)) end;
end;
$$;

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
