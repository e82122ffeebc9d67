--! Previous: sha1:5cf3813b8fd40441faaaa30858046bc9c04175ae
--! Hash: sha1:7368d34d7b0f9f226799b2e9c2e4cb9f92fb6ff8
--! Message: gift exchanges

-- Gift exchanges. Why: the source system (APScheduler in one process) sent reminders at
-- intervals before the exchange date in the exchange's own time zone, completed exchanges daily at
-- 00:00 UTC and purged them 30 days after completion daily at 02:00 UTC, with a warning 7 days
-- before; a restart or a second process broke those promises. Here statement-level triggers
-- schedule each of those jobs for its exact moment (job keys per exchange and purpose), on every
-- write path, and the two daily sweeps in the crontab catch anything missed.

drop function if exists app_private.sweep_exchange_purges(integer);
drop function if exists app_private.sweep_purge_warnings(integer);
drop function if exists app_private.sweep_due_exchanges(integer);
drop function if exists app_private.purge_exchange(bigint);
drop function if exists app_private.send_exchange_purge_warning(bigint);
drop function if exists app_private.queue_exchange_reminders(bigint, integer);
drop function if exists app_private.record_exchange_matches(bigint, bigint[], bigint[]);
drop function if exists app_private.fail_exchange_matching(bigint, text);
drop function if exists app_public.set_exchange_reminders(bigint, boolean);
drop function if exists app_public.withdraw_from_exchange(bigint);
drop function if exists app_public.join_exchange(bigint, text);
drop function if exists app_public.complete_exchange(bigint);
drop function if exists app_public.start_matching(bigint);
drop function if exists app_public.remove_exclusion(bigint, bigint, bigint);
drop function if exists app_public.add_exclusion(bigint, bigint, bigint);
drop function if exists app_public.close_registration(bigint);
drop function if exists app_public.open_registration(bigint);
drop function if exists app_public.set_reminder_days(bigint, integer[]);
drop function if exists app_public.update_exchange(bigint, text, text, numeric, timestamptz, text);
drop function if exists app_public.create_exchange(text, text, numeric, timestamptz, text, integer[]);
drop function if exists app_private.check_exchange_details(text, text, numeric, timestamptz, text);
drop function if exists app_private.exchange_for_organiser(bigint, text[]);
drop trigger if exists _500_after_delete on app_public.exchanges;
drop trigger if exists _500_after_update on app_public.exchanges;
drop trigger if exists _500_after_insert on app_public.exchanges;
drop function if exists app_private.tg_exchanges__after_delete();
drop function if exists app_private.tg_exchanges__after_update();
drop function if exists app_private.tg_exchanges__after_insert();
drop function if exists app_private.exchange_job_changes(app_public.exchanges, app_public.exchanges);
drop function if exists app_private.apply_job_changes(graphile_worker.job_spec[], text[]);
drop trigger if exists _200_rules on app_public.exchanges;
drop function if exists app_private.tg_exchanges__rules();
drop function if exists app_public.exchanges_reminder_times(app_public.exchanges);
drop function if exists app_public.exchange_reminder_at(timestamptz, text, integer);
drop table if exists app_public.exchange_purges cascade;
drop table if exists app_public.matches cascade;
drop table if exists app_public.exclusions cascade;
drop table if exists app_public.participants cascade;
drop table if exists app_public.exchanges cascade;
drop function if exists app_hidden.my_exchange_ids();
drop function if exists app_private.is_valid_reminder_days(integer[]);
drop function if exists app_private.is_timezone(text);

--------------------------------------------------------------------------------------------
-- Helpers

create function app_private.is_timezone(name text) returns boolean
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select exists (select 1 from pg_catalog.pg_timezone_names z where z.name = is_timezone.name);
$$;
comment on function app_private.is_timezone(text) is E'True for a time zone name PostgreSQL knows (pg_timezone_names), e.g. Europe/Paris. Reads the zone database: call it only when a zone changes.';

create function app_private.is_valid_reminder_days(days integer[]) returns boolean
language sql immutable
set search_path to pg_catalog, public, pg_temp
as $$
  select days is not null
     and (select count(*) filter (where d is null or d not between 1 and 60) = 0 and count(distinct d) = count(*)
          from unnest(days) d);
$$;
comment on function app_private.is_valid_reminder_days(integer[]) is E'Reminder days: distinct integers from 1 to 60 (an empty list means no reminders).';

create function app_public.exchange_reminder_at(exchange_date timestamptz, timezone text, days integer) returns timestamptz
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  -- The same local wall-clock time, `days` days earlier, in the exchange's zone: across a DST
  -- change this is not exchange_date - days * 24 hours.
  select ((exchange_date at time zone timezone) - make_interval(days => days)) at time zone timezone;
$$;
comment on function app_public.exchange_reminder_at(timestamptz, text, integer) is E'When the reminder `days` days before an exchange is due: the exchange''s local wall-clock time that many days earlier, in its own time zone (correct across daylight-saving changes).';

-- Keys to remove and jobs to add, in one call: graphile_worker.complete_jobs leaves a job that is
-- running alone (it re-reads its row and does nothing).
create function app_private.apply_job_changes(specs graphile_worker.job_spec[], remove_keys text[]) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if cardinality(remove_keys) > 0 then
    perform graphile_worker.complete_jobs(array(select j.id from graphile_worker.jobs j where j.key = any (remove_keys)));
  end if;
  if cardinality(specs) > 0 then
    perform app_private.add_jobs(specs);
  end if;
end;
$$;
comment on function app_private.apply_job_changes(graphile_worker.job_spec[], text[]) is E'Removes the queued jobs with the given keys, then enqueues the given jobs (task defaults applied). For statement-level triggers.';

--------------------------------------------------------------------------------------------
-- Tables

create table app_public.exchanges (
  id bigint primary key generated always as identity,
  organiser_id bigint not null default app_public.current_user_id() references app_public.users (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  description text not null default '' check (length(description) <= 5000),
  budget numeric(12, 2) check (budget >= 0),
  exchange_date timestamptz not null,
  timezone text not null,
  reminder_days integer[] not null default '{7,3,1}' check (app_private.is_valid_reminder_days(reminder_days)),
  state text not null default 'DRAFT'
    check (state in ('DRAFT', 'REGISTRATION_OPEN', 'REGISTRATION_CLOSED', 'MATCHING', 'MATCHED', 'COMPLETED')),
  completed_at timestamptz,
  purge_warning_sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((state = 'COMPLETED') = (completed_at is not null))
);
create index exchanges_organiser_id_idx on app_public.exchanges (organiser_id);
create index exchanges_state_idx on app_public.exchanges (state);
-- The daily sweeps walk only the exchanges they may act on.
create index exchanges_matched_date_idx on app_public.exchanges (exchange_date) where state = 'MATCHED';
create index exchanges_completed_at_idx on app_public.exchanges (completed_at) where state = 'COMPLETED';
alter table app_public.exchanges enable row level security;
comment on table app_public.exchanges is E'A gift exchange. DRAFT -> REGISTRATION_OPEN -> REGISTRATION_CLOSED -> MATCHING -> MATCHED -> COMPLETED, through the mutations (a DBA''s UPDATE fires the same jobs). When MATCHED, a reminder is scheduled for each of reminder_days at the exchange''s local time that many days before; it completes at exchange_date, and its data is purged 30 days after completion (the organiser is warned 7 days before).';
comment on column app_public.exchanges.exchange_date is E'When the gifts are exchanged (an instant; shown in `timezone`).';
comment on column app_public.exchanges.timezone is E'The exchange''s IANA time zone, e.g. America/New_York; reminders follow its wall clock.';
comment on column app_public.exchanges.reminder_days is E'Days before the exchange on which participants are reminded: distinct integers from 1 to 60.';
comment on column app_public.exchanges.state is E'DRAFT, REGISTRATION_OPEN, REGISTRATION_CLOSED, MATCHING, MATCHED or COMPLETED.';
comment on column app_public.exchanges.purge_warning_sent_at is E'When the organiser was warned of the purge (once per exchange).';

create table app_public.participants (
  id bigint primary key generated always as identity,
  exchange_id bigint not null references app_public.exchanges (id) on delete cascade,
  user_id bigint not null references app_public.users (id) on delete cascade,
  display_name text not null check (length(display_name) between 1 and 100),
  reminder_enabled boolean not null default true,
  withdrawn_at timestamptz,
  created_at timestamptz not null default now(),
  unique (exchange_id, user_id)
);
create index participants_user_id_idx on app_public.participants (user_id);
alter table app_public.participants enable row level security;
comment on table app_public.participants is E'Who takes part in an exchange. A withdrawn participant is not matched and receives nothing.';

create table app_public.exclusions (
  id bigint primary key generated always as identity,
  exchange_id bigint not null references app_public.exchanges (id) on delete cascade,
  participant_a bigint not null references app_public.participants (id) on delete cascade,
  participant_b bigint not null references app_public.participants (id) on delete cascade,
  created_at timestamptz not null default now(),
  check (participant_a < participant_b),
  unique (exchange_id, participant_a, participant_b)
);
create index exclusions_participant_a_idx on app_public.exclusions (participant_a);
create index exclusions_participant_b_idx on app_public.exclusions (participant_b);
alter table app_public.exclusions enable row level security;
comment on table app_public.exclusions is E'Two participants who must not draw each other (either way). Stored with participant_a < participant_b.';

create table app_public.matches (
  id bigint primary key generated always as identity,
  exchange_id bigint not null references app_public.exchanges (id) on delete cascade,
  giver_id bigint not null references app_public.participants (id) on delete cascade,
  receiver_id bigint not null references app_public.participants (id) on delete cascade,
  created_at timestamptz not null default now(),
  check (giver_id <> receiver_id),
  unique (exchange_id, giver_id),
  unique (exchange_id, receiver_id)
);
create index matches_giver_id_idx on app_public.matches (giver_id);
create index matches_receiver_id_idx on app_public.matches (receiver_id);
alter table app_public.matches enable row level security;
comment on table app_public.matches is E'Who gives to whom. Each giver sees only their own row; nobody else, the organiser included.';

create table app_public.exchange_purges (
  id bigint primary key generated always as identity,
  exchange_id bigint not null,
  name text not null,
  organiser_id bigint,
  completed_at timestamptz not null,
  purged_at timestamptz not null default now(),
  participants integer not null,
  exclusions integer not null,
  matches integer not null
);
create index exchange_purges_purged_at_idx on app_public.exchange_purges (purged_at);
alter table app_public.exchange_purges enable row level security;
create policy select_as_admin on app_public.exchange_purges for select using (app_hidden.current_user_is_admin());
grant select on app_public.exchange_purges to :DATABASE_VISITOR;
comment on table app_public.exchange_purges is E'What each purge deleted and when, written in the same transaction as the delete. Admins only.';

-- The signed-in user's exchanges: organised, or joined (withdrawn or not).
create function app_hidden.my_exchange_ids() returns setof bigint
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select e.id from app_public.exchanges e where e.organiser_id = app_public.current_user_id()
  union
  select p.exchange_id from app_public.participants p where p.user_id = app_public.current_user_id();
$$;
comment on function app_hidden.my_exchange_ids() is E'Exchanges the signed-in user organises or takes part in.';

create policy select_own on app_public.exchanges for select using (id in (select app_hidden.my_exchange_ids()));
create policy select_as_admin on app_public.exchanges for select using (app_hidden.current_user_is_admin());
grant select on app_public.exchanges to :DATABASE_VISITOR;

create policy select_in_my_exchanges on app_public.participants for select using (exchange_id in (select app_hidden.my_exchange_ids()));
create policy select_as_admin on app_public.participants for select using (app_hidden.current_user_is_admin());
grant select on app_public.participants to :DATABASE_VISITOR;

create policy select_as_organiser on app_public.exclusions for select using (
  exists (select 1 from app_public.exchanges e where e.id = exclusions.exchange_id and e.organiser_id = app_public.current_user_id()));
create policy select_as_admin on app_public.exclusions for select using (app_hidden.current_user_is_admin());
grant select on app_public.exclusions to :DATABASE_VISITOR;

create policy select_own_as_giver on app_public.matches for select using (
  exists (select 1 from app_public.participants p where p.id = matches.giver_id and p.user_id = app_public.current_user_id()));
grant select on app_public.matches to :DATABASE_VISITOR;

create function app_public.exchanges_reminder_times(e app_public.exchanges) returns timestamptz[]
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select array(select app_public.exchange_reminder_at(e.exchange_date, e.timezone, d) from unnest(e.reminder_days) d order by 1);
$$;
comment on function app_public.exchanges_reminder_times(app_public.exchanges) is E'When each reminder is (or was) due, earliest first.';

--------------------------------------------------------------------------------------------
-- Row rules, on every write path

create function app_private.tg_exchanges__rules() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_op = 'INSERT' then
    new.created_at := now();
    new.updated_at := now();
  else
    if (new.organiser_id, new.created_at) is distinct from (old.organiser_id, old.created_at) then
      raise exception 'An exchange''s organiser and created_at cannot change (exchange %)', old.id using errcode = 'EXFIX';
    end if;
    new.updated_at := case when old.updated_at >= now() then old.updated_at + interval '1 millisecond' else now() end;
  end if;
  if (tg_op = 'INSERT' or new.timezone <> old.timezone) and not app_private.is_timezone(new.timezone) then
    raise exception 'Unknown time zone %', new.timezone using errcode = 'EXTZN';
  end if;
  if tg_op = 'INSERT' or new.state <> old.state then
    if new.state = 'COMPLETED' then
      new.completed_at := coalesce(new.completed_at, now());
    else
      -- Reopened (by hand): no longer complete, and a later completion warns again.
      new.completed_at := null;
      new.purge_warning_sent_at := null;
    end if;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_exchanges__rules() is E'Before each write of an exchange: keeps organiser and created_at fixed (EXFIX), stamps times, checks the time zone (EXTZN), sets completed_at on completion and clears it (and the purge warning) when an exchange is reopened.';
create trigger _200_rules before insert or update on app_public.exchanges
  for each row execute procedure app_private.tg_exchanges__rules();

--------------------------------------------------------------------------------------------
-- Jobs for a change from o to n (either may be null: insert, delete)

create function app_private.exchange_job_changes(n app_public.exchanges, o app_public.exchanges)
returns table (identifier text, job_key text, run_at timestamptz, payload json, remove boolean)
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  -- Matching starts.
  select 'exchanges__match', 'exchanges:' || n.id || ':match', null::timestamptz, json_build_object('id', n.id), false
  where n.state = 'MATCHING' and o.state is distinct from 'MATCHING'
  union all
  -- Reminders to (re)schedule: entering MATCHED, or date, zone or days changed while MATCHED.
  -- Those whose time has passed are not scheduled.
  select 'exchanges__send_reminders', 'exchanges:' || n.id || ':reminder:' || d,
         app_public.exchange_reminder_at(n.exchange_date, n.timezone, d), json_build_object('id', n.id, 'days', d), false
  from unnest(n.reminder_days) d
  where n.state = 'MATCHED'
    and (o.state is distinct from 'MATCHED'
         or (n.exchange_date, n.timezone, n.reminder_days) is distinct from (o.exchange_date, o.timezone, o.reminder_days))
    and app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) > now()
  union all
  -- Reminders scheduled before that are not scheduled now: leaving MATCHED, a day removed, or a
  -- time that has now passed.
  select null, 'exchanges:' || o.id || ':reminder:' || d, null, null, true
  from unnest(o.reminder_days) d
  where o.state = 'MATCHED'
    and (n.state is distinct from 'MATCHED'
         or ((n.exchange_date, n.timezone, n.reminder_days) is distinct from (o.exchange_date, o.timezone, o.reminder_days)
             and not (d = any (n.reminder_days) and app_public.exchange_reminder_at(n.exchange_date, n.timezone, d) > now())))
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
comment on function app_private.exchange_job_changes(app_public.exchanges, app_public.exchanges) is E'The jobs to enqueue (remove = false) and the job keys to remove (remove = true) for a change of one exchange from o to n; null o is an insert, null n a delete.';

-- Each statement trigger runs one dynamic statement: a cached plan would keep the row estimate
-- of the transition tables from the first statement it saw (see the offers triggers).
create function app_private.tg_exchanges__after_insert() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  execute $sql$
    with c as materialized (
      select c.* from new_rows n cross join lateral app_private.exchange_job_changes(n, null) c
    )
    select app_private.apply_job_changes(
      array(select row(c.identifier, c.payload, null, c.run_at, null, c.job_key, null, null)::graphile_worker.job_spec from c where not c.remove),
      array(select c.job_key from c where c.remove))
  $sql$;
  return null;
end;
$$;
create trigger _500_after_insert after insert on app_public.exchanges
  referencing new table as new_rows
  for each statement execute procedure app_private.tg_exchanges__after_insert();

create function app_private.tg_exchanges__after_update() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  execute $sql$
    with c as materialized (
      select c.* from new_rows n join old_rows o on o.id = n.id
      cross join lateral app_private.exchange_job_changes(n, o) c
      where (n.state, n.exchange_date, n.timezone, n.reminder_days, n.completed_at)
            is distinct from (o.state, o.exchange_date, o.timezone, o.reminder_days, o.completed_at)
    )
    select app_private.apply_job_changes(
      array(select row(c.identifier, c.payload, null, c.run_at, null, c.job_key, null, null)::graphile_worker.job_spec from c where not c.remove),
      array(select c.job_key from c where c.remove))
  $sql$;
  return null;
end;
$$;
create trigger _500_after_update after update on app_public.exchanges
  referencing old table as old_rows new table as new_rows
  for each statement execute procedure app_private.tg_exchanges__after_update();

create function app_private.tg_exchanges__after_delete() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  execute $sql$
    select app_private.apply_job_changes(null,
      array(select c.job_key from old_rows o cross join lateral app_private.exchange_job_changes(null, o) c where c.remove))
  $sql$;
  return null;
end;
$$;
create trigger _500_after_delete after delete on app_public.exchanges
  referencing old table as old_rows
  for each statement execute procedure app_private.tg_exchanges__after_delete();

comment on function app_private.tg_exchanges__after_insert() is E'After an insert statement: the jobs of exchanges inserted directly in a scheduled state (see app_private.exchange_job_changes).';
comment on function app_private.tg_exchanges__after_update() is E'After an update statement: schedules, moves and removes matching, reminder, completion, purge-warning and purge jobs (see app_private.exchange_job_changes), one add_jobs call per statement.';
comment on function app_private.tg_exchanges__after_delete() is E'After a delete statement: removes the queued jobs of the deleted exchanges.';

--------------------------------------------------------------------------------------------
-- Mutations: the organiser

-- The exchange, locked, if the signed-in user organises it; and in one of `states` if given.
create function app_private.exchange_for_organiser(exchange_id bigint, states text[] default null) returns app_public.exchanges
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
begin
  select * into v_exchange from app_public.exchanges e where e.id = exchange_id for update;
  if not found or v_exchange.id not in (select app_hidden.my_exchange_ids()) then
    raise exception 'Exchange % not found', exchange_id using errcode = 'EXNFD';
  end if;
  if v_exchange.organiser_id is distinct from app_public.current_user_id() then
    raise exception 'Only the organiser can do this to exchange %', exchange_id using errcode = 'EXPRM';
  end if;
  if states is not null and not v_exchange.state = any (states) then
    raise exception 'Exchange % is %; this needs %', exchange_id, v_exchange.state, array_to_string(states, ' or ') using errcode = 'EXSTA';
  end if;
  return v_exchange;
end;
$$;

create function app_private.check_exchange_details(name text, description text, budget numeric, exchange_date timestamptz, timezone text) returns void
language plpgsql stable
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if coalesce(length(btrim(name)), 0) not between 1 and 200 then
    raise exception 'A name of 1 to 200 characters is required' using errcode = 'EXNAM';
  end if;
  if length(description) > 5000 then
    raise exception 'The description is longer than 5000 characters' using errcode = 'EXNAM';
  end if;
  if budget < 0 then
    raise exception 'The budget cannot be negative' using errcode = 'EXBDG';
  end if;
  if exchange_date is null or exchange_date <= now() then
    raise exception 'The exchange date must be in the future' using errcode = 'EXDAT';
  end if;
  if timezone is null or not app_private.is_timezone(timezone) then
    raise exception 'Unknown time zone %', timezone using errcode = 'EXTZN';
  end if;
end;
$$;

create function app_public.create_exchange(
  name text, description text, budget numeric, exchange_date timestamptz, timezone text,
  reminder_days integer[] default '{7,3,1}'
) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
begin
  if app_public.current_user_id() is null then
    raise exception 'Sign in to organise an exchange' using errcode = 'EXPRM';
  end if;
  perform app_private.check_exchange_details(name, description, budget, exchange_date, timezone);
  if not app_private.is_valid_reminder_days(reminder_days) then
    raise exception 'Reminder days must be distinct whole numbers from 1 to 60' using errcode = 'EXRDY';
  end if;
  insert into app_public.exchanges (organiser_id, name, description, budget, exchange_date, timezone, reminder_days)
  values (app_public.current_user_id(), btrim(name), coalesce(description, ''), budget, exchange_date, timezone, reminder_days)
  returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.create_exchange(text, text, numeric, timestamptz, text, integer[]) is E'Starts a gift exchange (DRAFT) organised by the signed-in user. The date must be in the future; timezone is an IANA name; reminder_days distinct, 1 to 60.';

create function app_public.update_exchange(exchange_id bigint, name text, description text, budget numeric, exchange_date timestamptz, timezone text)
returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id,
    array['DRAFT', 'REGISTRATION_OPEN', 'REGISTRATION_CLOSED', 'MATCHED']);
begin
  perform app_private.check_exchange_details(name, description, budget, exchange_date, timezone);
  update app_public.exchanges e set name = btrim(update_exchange.name), description = coalesce(update_exchange.description, ''),
    budget = update_exchange.budget, exchange_date = update_exchange.exchange_date, timezone = update_exchange.timezone
  where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.update_exchange(bigint, text, text, numeric, timestamptz, text) is E'The organiser edits an exchange (not while matching or once completed). A new date or zone moves the reminders of a matched exchange.';

create function app_public.set_reminder_days(exchange_id bigint, reminder_days integer[]) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id,
    array['DRAFT', 'REGISTRATION_OPEN', 'REGISTRATION_CLOSED', 'MATCHING', 'MATCHED']);
begin
  if not app_private.is_valid_reminder_days(reminder_days) then
    raise exception 'Reminder days must be distinct whole numbers from 1 to 60' using errcode = 'EXRDY';
  end if;
  update app_public.exchanges e set reminder_days = set_reminder_days.reminder_days where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.set_reminder_days(bigint, integer[]) is E'The organiser sets the days before the exchange on which participants are reminded (distinct, 1 to 60; empty for none).';

create function app_public.open_registration(exchange_id bigint) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id, array['DRAFT', 'REGISTRATION_CLOSED']);
begin
  update app_public.exchanges e set state = 'REGISTRATION_OPEN' where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.open_registration(bigint) is E'The organiser opens (or reopens) registration: people may join.';

create function app_public.close_registration(exchange_id bigint) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id, array['REGISTRATION_OPEN']);
begin
  update app_public.exchanges e set state = 'REGISTRATION_CLOSED' where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.close_registration(bigint) is E'The organiser closes registration, ready for exclusions and matching.';

create function app_public.add_exclusion(exchange_id bigint, participant_a bigint, participant_b bigint) returns app_public.exclusions
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id,
    array['DRAFT', 'REGISTRATION_OPEN', 'REGISTRATION_CLOSED']);
  v_exclusion app_public.exclusions;
begin
  if participant_a is null or participant_b is null or participant_a = participant_b then
    raise exception 'An exclusion needs two different participants' using errcode = 'EXSLF';
  end if;
  if (select count(*) from app_public.participants p
      where p.exchange_id = add_exclusion.exchange_id and p.id in (participant_a, participant_b)) <> 2 then
    raise exception 'Both must be participants of exchange %', exchange_id using errcode = 'EXPAR';
  end if;
  insert into app_public.exclusions (exchange_id, participant_a, participant_b)
  values (add_exclusion.exchange_id, least(participant_a, participant_b), greatest(participant_a, participant_b))
  on conflict on constraint exclusions_exchange_id_participant_a_participant_b_key do update set created_at = app_public.exclusions.created_at
  returning * into v_exclusion;
  return v_exclusion;
end;
$$;
comment on function app_public.add_exclusion(bigint, bigint, bigint) is E'The organiser rules out two participants drawing each other (either way). Adding an existing pair again changes nothing.';

create function app_public.remove_exclusion(exchange_id bigint, participant_a bigint, participant_b bigint) returns boolean
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id,
    array['DRAFT', 'REGISTRATION_OPEN', 'REGISTRATION_CLOSED']);
begin
  delete from app_public.exclusions x
  where x.exchange_id = remove_exclusion.exchange_id
    and x.participant_a = least(remove_exclusion.participant_a, remove_exclusion.participant_b)
    and x.participant_b = greatest(remove_exclusion.participant_a, remove_exclusion.participant_b);
  return found;
end;
$$;
comment on function app_public.remove_exclusion(bigint, bigint, bigint) is E'The organiser removes an exclusion; returns whether there was one.';

create function app_public.start_matching(exchange_id bigint) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id, array['REGISTRATION_CLOSED']);
begin
  update app_public.exchanges e set state = 'MATCHING' where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.start_matching(bigint) is E'The organiser starts matching: the exchanges__match job draws a random assignment and the exchange becomes MATCHED (everyone is emailed their assignment), or returns to REGISTRATION_CLOSED with a notification saying why.';

create function app_public.complete_exchange(exchange_id bigint) returns app_public.exchanges
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges := app_private.exchange_for_organiser(exchange_id, array['MATCHED']);
begin
  update app_public.exchanges e set state = 'COMPLETED' where e.id = exchange_id returning * into v_exchange;
  return v_exchange;
end;
$$;
comment on function app_public.complete_exchange(bigint) is E'The organiser completes a matched exchange early. Its data is purged 30 days later.';

--------------------------------------------------------------------------------------------
-- Mutations: participants

create function app_public.join_exchange(exchange_id bigint, display_name text) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_state text;
  v_participant app_public.participants;
begin
  if app_public.current_user_id() is null then
    raise exception 'Sign in to join an exchange' using errcode = 'EXPRM';
  end if;
  select e.state into v_state from app_public.exchanges e where e.id = exchange_id for share;
  if v_state is null then
    raise exception 'Exchange % not found', exchange_id using errcode = 'EXNFD';
  end if;
  if v_state <> 'REGISTRATION_OPEN' then
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
comment on function app_public.join_exchange(bigint, text) is E'The signed-in user joins an exchange while registration is open (or rejoins after withdrawing). Anyone with the exchange id may join.';

create function app_public.withdraw_from_exchange(exchange_id bigint) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_participant app_public.participants;
begin
  update app_public.participants p set withdrawn_at = now()
  where p.exchange_id = withdraw_from_exchange.exchange_id and p.user_id = app_public.current_user_id() and p.withdrawn_at is null
    and exists (select 1 from app_public.exchanges e where e.id = p.exchange_id and e.state <> 'COMPLETED')
  returning * into v_participant;
  if v_participant.id is null then
    raise exception 'You are not taking part in exchange %', exchange_id using errcode = 'EXNPT';
  end if;
  return v_participant;
end;
$$;
comment on function app_public.withdraw_from_exchange(bigint) is E'The signed-in participant withdraws: not matched (if matching has not happened) and no further reminders.';

create function app_public.set_exchange_reminders(exchange_id bigint, enabled boolean) returns app_public.participants
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_participant app_public.participants;
begin
  update app_public.participants p set reminder_enabled = coalesce(enabled, true)
  where p.exchange_id = set_exchange_reminders.exchange_id and p.user_id = app_public.current_user_id() and p.withdrawn_at is null
  returning * into v_participant;
  if v_participant.id is null then
    raise exception 'You are not taking part in exchange %', exchange_id using errcode = 'EXNPT';
  end if;
  return v_participant;
end;
$$;
comment on function app_public.set_exchange_reminders(bigint, boolean) is E'The signed-in participant turns their reminder emails on or off.';

--------------------------------------------------------------------------------------------
-- What the jobs do in the database

-- The matching job's result, in one transaction: matches, MATCHED, one assignment email each.
create function app_private.record_exchange_matches(exchange_id bigint, givers bigint[], receivers bigint[]) returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
  v_count integer;
begin
  select * into v_exchange from app_public.exchanges e where e.id = exchange_id and e.state = 'MATCHING' for update;
  if not found then
    return null;
  end if;
  delete from app_public.matches m where m.exchange_id = record_exchange_matches.exchange_id;
  with made as (
    insert into app_public.matches (exchange_id, giver_id, receiver_id)
    select record_exchange_matches.exchange_id, g, r from unnest(givers, receivers) as u(g, r)
    returning id, giver_id, receiver_id
  )
  select count(app_private.queue_email(
    'exchange_match:' || m.id, 'notification', u.email,
    jsonb_build_object(
      'title', 'Your gift exchange assignment: ' || v_exchange.name,
      'body', 'You are giving a gift to ' || r.display_name || ' for "' || v_exchange.name || '" on '
        || to_char(v_exchange.exchange_date at time zone v_exchange.timezone, 'FMDay DD FMMonth YYYY, HH24:MI') || ' (' || v_exchange.timezone || ')'
        || coalesce('. Budget: ' || v_exchange.budget::text, '') || '. Keep it secret!')))::integer
  into v_count
  from made m
  join app_public.participants g on g.id = m.giver_id
  join app_public.participants r on r.id = m.receiver_id
  join app_public.users u on u.id = g.user_id;
  update app_public.exchanges e set state = 'MATCHED' where e.id = exchange_id;
  return v_count;
end;
$$;
comment on function app_private.record_exchange_matches(bigint, bigint[], bigint[]) is E'Stores a drawn assignment (givers[i] gives to receivers[i]) for an exchange in MATCHING, makes it MATCHED and queues one assignment email per giver (key exchange_match:<match id>). Returns how many emails were queued, or null when the exchange is no longer MATCHING.';

create function app_private.fail_exchange_matching(exchange_id bigint, reason text) returns boolean
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
begin
  update app_public.exchanges e set state = 'REGISTRATION_CLOSED'
  where e.id = exchange_id and e.state = 'MATCHING'
  returning * into v_exchange;
  if not found then
    return false;
  end if;
  perform app_private.notify(v_exchange.organiser_id, 'exchange.matching_failed',
    'Matching failed for ' || v_exchange.name,
    reason || ' Change the participants or exclusions and start matching again.',
    jsonb_build_object('exchangeId', v_exchange.id),
    'exchange:' || v_exchange.id || ':matching_failed:' || pg_catalog.pg_current_xact_id()::text);
  return true;
end;
$$;
comment on function app_private.fail_exchange_matching(bigint, text) is E'Matching found no valid assignment: back to REGISTRATION_CLOSED and the organiser is told why.';

create function app_private.queue_exchange_reminders(exchange_id bigint, days integer) returns integer
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  -- One email per opted-in, non-withdrawn participant; the key holds the reminder's time, so a
  -- rerun sends nothing and a reminder for a new date is a new email.
  select count(app_private.queue_email(
    'exchange:' || e.id || ':reminder:' || days || ':' || p.id || ':' || extract(epoch from r.at)::bigint,
    'notification', u.email,
    jsonb_build_object(
      'title', 'Reminder: ' || e.name || case when days = 1 then ' is tomorrow' else ' is in ' || days || ' days' end,
      'body', e.name || ' takes place on ' || to_char(e.exchange_date at time zone e.timezone, 'FMDay DD FMMonth YYYY, HH24:MI')
        || ' (' || e.timezone || ')' || coalesce('. Budget: ' || e.budget::text, '') || '.')))::integer
  from app_public.exchanges e
  cross join lateral (select app_public.exchange_reminder_at(e.exchange_date, e.timezone, days) as at) r
  join app_public.participants p on p.exchange_id = e.id and p.withdrawn_at is null and p.reminder_enabled
  join app_public.users u on u.id = p.user_id
  where e.id = queue_exchange_reminders.exchange_id;
$$;
comment on function app_private.queue_exchange_reminders(bigint, integer) is E'Queues the `days`-day reminder email of an exchange for each participant who has not withdrawn and has reminders on. Idempotent. Returns how many were newly queued.';

create function app_private.send_exchange_purge_warning(exchange_id bigint) returns boolean
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
begin
  update app_public.exchanges e set purge_warning_sent_at = now()
  where e.id = exchange_id and e.state = 'COMPLETED' and e.purge_warning_sent_at is null
    and e.completed_at <= now() - interval '23 days'
  returning * into v_exchange;
  if not found then
    return false;
  end if;
  perform app_private.notify(v_exchange.organiser_id, 'exchange.purge_warning',
    v_exchange.name || ' will be deleted in 7 days',
    'The exchange "' || v_exchange.name || '" completed on ' || to_char(v_exchange.completed_at at time zone v_exchange.timezone, 'FMDD FMMonth YYYY')
      || '. Its participants, exclusions and assignments will be deleted on '
      || to_char((v_exchange.completed_at + interval '30 days') at time zone v_exchange.timezone, 'FMDD FMMonth YYYY') || '.',
    jsonb_build_object('exchangeId', v_exchange.id),
    'exchange:' || v_exchange.id || ':purge_warning');
  return true;
end;
$$;
comment on function app_private.send_exchange_purge_warning(bigint) is E'Warns the organiser, once per exchange, that a completed exchange will be purged; only 23 or more days after completion. Returns whether it warned.';

create function app_private.purge_exchange(exchange_id bigint) returns boolean
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_exchange app_public.exchanges;
begin
  -- Eligibility is checked here, at delete time, under a lock: a reopened or younger exchange
  -- is never deleted, whatever the job or sweep that called this believed.
  select * into v_exchange from app_public.exchanges e
  where e.id = exchange_id and e.state = 'COMPLETED' and e.completed_at <= now() - interval '30 days'
  for update;
  if not found then
    return false;
  end if;
  insert into app_public.exchange_purges (exchange_id, name, organiser_id, completed_at, participants, exclusions, matches)
  select v_exchange.id, v_exchange.name, v_exchange.organiser_id, v_exchange.completed_at,
    (select count(*) from app_public.participants p where p.exchange_id = v_exchange.id),
    (select count(*) from app_public.exclusions x where x.exchange_id = v_exchange.id),
    (select count(*) from app_public.matches m where m.exchange_id = v_exchange.id);
  delete from app_public.exchanges e where e.id = v_exchange.id;
  return true;
end;
$$;
comment on function app_private.purge_exchange(bigint) is E'Deletes a completed exchange 30 or more days after completion, with its participants, exclusions and matches, and logs what it deleted in app_public.exchange_purges, in one transaction. Returns false (and deletes nothing) when the exchange is not eligible.';

--------------------------------------------------------------------------------------------
-- The daily sweeps: the safety net for the jobs

create function app_private.sweep_due_exchanges(batch_size integer, out completed integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with done as (
    update app_public.exchanges e set state = 'COMPLETED'
    where e.id = any (array(
      select d.id from app_public.exchanges d where d.state = 'MATCHED' and d.exchange_date <= now()
      order by d.exchange_date limit batch_size for update skip locked))
    and e.state = 'MATCHED'
    returning 1
  )
  select count(*) into completed from done;
  remaining := case when completed < batch_size then 0 else (
    select count(*) from app_public.exchanges d where d.state = 'MATCHED' and d.exchange_date <= now()) end;
end;
$$;
comment on function app_private.sweep_due_exchanges(integer) is E'Completes up to batch_size MATCHED exchanges whose date has passed. Returns how many, and how many remain (0 unless the batch was full).';

create function app_private.sweep_purge_warnings(batch_size integer, out warned integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  select count(*) filter (where app_private.send_exchange_purge_warning(d.id)) into warned
  from (select e.id from app_public.exchanges e
        where e.state = 'COMPLETED' and e.purge_warning_sent_at is null and e.completed_at <= now() - interval '23 days'
        order by e.completed_at limit batch_size) d;
  remaining := case when warned < batch_size then 0 else (
    select count(*) from app_public.exchanges e
    where e.state = 'COMPLETED' and e.purge_warning_sent_at is null and e.completed_at <= now() - interval '23 days') end;
end;
$$;
comment on function app_private.sweep_purge_warnings(integer) is E'Sends up to batch_size purge warnings that are due and were not sent. Returns how many, and how many remain.';

create function app_private.sweep_exchange_purges(batch_size integer, out purged integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  select count(*) filter (where app_private.purge_exchange(d.id)) into purged
  from (select e.id from app_public.exchanges e
        where e.state = 'COMPLETED' and e.completed_at <= now() - interval '30 days'
        order by e.completed_at limit batch_size) d;
  remaining := case when purged < batch_size then 0 else (
    select count(*) from app_public.exchanges e where e.state = 'COMPLETED' and e.completed_at <= now() - interval '30 days') end;
end;
$$;
comment on function app_private.sweep_exchange_purges(integer) is E'Purges up to batch_size exchanges completed 30 or more days ago (see purge_exchange). Returns how many, and how many remain.';
