--! Previous: sha1:f8110aeac9e93517ab4548e70d2bfcdcf8fa9c4c
--! Hash: sha1:a6f1d36f551b05d06d85bac95f3466480d88d7ad
--! Message: Cheaper bulk statements and a clean worker stop that hands back its jobs

-- Cheaper bulk statements (issue 4's trigger cost): per-row trigger functions without a pinned
-- search_path, and two linear-time steps in the statement triggers.

--------------------------------------------------------------------------------------------
-- A function with `set search_path` runs through PostgreSQL's configuration wrapper on every
-- call: the setting is saved, set and restored each time. For a row trigger that is about 2 µs a
-- row, 0.2 s of a 100,000-row send (measured with the offers table of `npm run bench` §6b). The
-- pin protects security definer functions from a caller's search_path; these are security
-- invoker (they run with the writer's own rights), reference every relation and function of ours
-- schema-qualified, and use only built-ins, which resolve from pg_catalog first. Security definer
-- functions keep their pin (test/db/security.test.ts checks it).
alter function app_private.tg__timestamps() reset search_path;
alter function app_private.tg_offers__rules() reset search_path;
alter function app_private.tg_exchanges__rules() reset search_path;
alter function app_private.tg_email_deliveries__metrics() reset search_path;
alter function app_private.tg_webhook_attempts__metrics() reset search_path;
alter function app_private.tg_webhook_deliveries__metrics() reset search_path;
-- Called by the metrics row triggers, once a row: the same per-call cost.
alter function app_private.count_metric(text, text) reset search_path;

--------------------------------------------------------------------------------------------
-- Wake-ups: a bulk statement usually gives many jobs one run_at (now() is fixed in a
-- transaction), so the distinct run_ats are found before rounding each to its 10 ms slot.
create or replace function app_private.note_wakeups(run_ats timestamptz[]) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new integer;
begin
  -- In order: two transactions inserting overlapping slots then lock them in the same order.
  insert into app_private.job_wakeups (at)
  select distinct to_timestamp(ceil(extract(epoch from d.r) * 100) / 100)
  from (select distinct r from unnest(run_ats) r where r > now()) d
  order by 1
  on conflict (at) do nothing;
  get diagnostics v_new = row_count;
  if v_new > 0 then
    perform pg_notify('hourglass:wake', '');
  end if;
end;
$$;

-- Fan-out batches by array slices (linear) rather than by grouping on each id's ordinal (a sort
-- of every id).
create or replace function app_private.offer_notification_batches(event text, ids bigint[]) returns setof graphile_worker.job_spec
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select row('offers__queue_notifications',
             json_build_object('event', event, 'ids', ids[i:i + 999], 'change', pg_catalog.pg_current_xact_id()::text),
             null, null, null, null, null, null)::graphile_worker.job_spec
  from generate_series(1, coalesce(cardinality(ids), 0), 1000) i;
$$;

--------------------------------------------------------------------------------------------
-- No JIT in the statement triggers. PostgreSQL has no statistics for transition tables, so a
-- join of old_rows and new_rows is estimated at rows × rows / 2 (50 million for a 100,000-row
-- statement). That cost passes the JIT thresholds, and compiling the query with inlining and
-- optimisation took 0.5 s of a 3.5 s bulk send on PostgreSQL 15 (auto_explain), more than the
-- query itself. A setting on the function lasts for its call (the statement's trigger), nested
-- queries included, and costs nothing per row.
alter function app_private.tg_offers__after_insert() set jit = off;
alter function app_private.tg_offers__after_update() set jit = off;
alter function app_private.tg_offers__after_delete() set jit = off;
alter function app_private.tg_offers__emit_events() set jit = off;
alter function app_private.tg_exchanges__after_insert() set jit = off;
alter function app_private.tg_exchanges__after_update() set jit = off;
alter function app_private.tg_exchanges__after_delete() set jit = off;
alter function app_private.tg_exchanges__emit_events() set jit = off;
alter function app_private.tg_exchange_purges__emit_events() set jit = off;

--------------------------------------------------------------------------------------------
-- A worker process that stopped cleanly (nothing of it runs any more) hands back any job its
-- pool still holds locked. graphile-worker 0.18's local queue cannot return the jobs waiting in it
-- when shutdown begins (it throws "Cannot background something when the queue is already
-- released" and sends the hand-back without waiting for it), so they could stay locked until
-- the hand-back lands or, if the pool ended first, for four hours. The worker passes the ids
-- graphile-worker meant to hand back (fetched, never started): those get back the attempt their
-- fetch counted, as graphile-worker's own hand-back does. Any other job still locked (a run whose
-- completion write was lost) is unlocked with its attempt counted, as after a crash. The rows stay
-- locked by this transaction between the unlock and the attempts fix, so no other worker takes
-- one in between. (The worker waits for its pool to be idle first, so graphile-worker's own
-- hand-back, if it is still under way, lands before this reads which jobs are locked.)
drop function if exists app_private.forget_worker(text);
drop function if exists app_private.forget_worker(text, bigint[]);
create function app_private.forget_worker(id text, unstarted bigint[] default '{}') returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_jobs bigint[];
begin
  v_jobs := array(select j.id from graphile_worker.jobs j where j.locked_by = forget_worker.id);
  if cardinality(v_jobs) > 0 then
    perform graphile_worker.force_unlock_workers(array[forget_worker.id]);
    perform count(*)
    from (select j.attempts, array_agg(j.id) as ids from graphile_worker.jobs j
          where j.id = any (v_jobs) and j.id = any (unstarted) group by j.attempts) g,
      lateral graphile_worker.reschedule_jobs(g.ids, attempts := greatest(0, g.attempts - 1)) r;
    perform pg_notify('jobs:insert', json_build_object('r', random(), 'count', cardinality(v_jobs))::text);
  end if;
  delete from app_public.worker_processes w where w.id = forget_worker.id;
  return cardinality(v_jobs);
end;
$$;
comment on function app_private.forget_worker(text, bigint[]) is E'A worker process that stopped cleanly (none of its jobs still running) removes its heartbeat and unlocks the jobs its pool still holds; those in unstarted (fetched, never started) get back the attempt their fetch counted. Returns how many it unlocked.';
