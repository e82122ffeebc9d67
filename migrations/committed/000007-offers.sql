--! Previous: sha1:d4a2e23c454aef0e26ebf1b67a95879aa5ce0e23
--! Hash: sha1:1d6abfdc9c58ed77bc1c2368fdade3a9e875458d
--! Message: offers

-- Offers marketplace. Why: the source system expired offers with an hourly sweep (up to an hour
-- late) and sent notifications from model hooks that bulk updates and hand-written SQL bypassed.
-- Here every write path -- a GraphQL mutation, a DBA's UPDATE, a bulk statement -- goes through the
-- same row rules (BEFORE trigger) and the same statement-level triggers, which schedule each
-- offer's expiry for its exact expires_at, create the placement on acceptance, and enqueue one
-- notification job per recipient, all in the transaction that made the change.

drop function if exists app_private.sweep_overdue_offers(integer);
drop function if exists app_private.schedule_jobs(text, json[], timestamptz[], text[]);
drop function if exists app_public.mark_offer_read(bigint);
drop function if exists app_public.reject_offer(bigint, text, text);
drop function if exists app_public.accept_offer(bigint);
drop function if exists app_public.withdraw_offer(bigint, text);
drop function if exists app_public.send_offer(bigint);
drop function if exists app_public.update_offer(bigint, text, date, date, integer);
drop function if exists app_public.create_offer(bigint, text, date, date, integer, text);
drop function if exists app_private.check_offer_content(text, date, date, integer);
drop function if exists app_private.answerable_offer(bigint, text);
drop function if exists app_private.load_offer_for(bigint, text);
drop trigger if exists _600_after_delete on app_public.offers;
drop trigger if exists _500_after_update on app_public.offers;
drop trigger if exists _500_after_insert on app_public.offers;
drop function if exists app_private.tg_offers__after_delete();
drop function if exists app_private.tg_offers__after_update();
drop function if exists app_private.tg_offers__after_insert();
drop function if exists app_private.queue_offer_notifications(text, bigint[], text);
drop function if exists app_private.offer_notification_batches(text, bigint[]);
drop trigger if exists _200_rules on app_public.offers;
drop function if exists app_private.tg_offers__rules();
drop function if exists app_public.offers_time_to_accept(app_public.offers);
drop table if exists app_public.placements cascade;
drop table if exists app_public.offers cascade;
drop table if exists app_public.job_applications cascade;
drop table if exists app_public.jobs cascade;
drop table if exists app_public.workers cascade;
drop table if exists app_public.company_members cascade;
drop table if exists app_public.companies cascade;
drop function if exists app_hidden.my_company_ids();
drop function if exists app_hidden.my_worker_ids();
drop function if exists app_private.notify(bigint, text, text, text, jsonb, text);
alter table app_public.notifications drop column if exists key;
alter table app_public.notifications drop column if exists emailed;

--------------------------------------------------------------------------------------------
-- Notifications sent by events (not only the digest): idempotent by key, emailed at once when
-- the recipient's preference allows, and then left out of the digest.

alter table app_public.notifications add column key text;
alter table app_public.notifications add column emailed boolean not null default false;
create unique index notifications_key_idx on app_public.notifications (key);
comment on column app_public.notifications.key is E'Idempotency key of the event that created it (e.g. offer:42:expired:7:...); a repeated event adds nothing.';
comment on column app_public.notifications.emailed is E'True when it was also emailed on its own; the daily digest leaves it out.';

create function app_private.notify(user_id bigint, type text, title text, body text, data jsonb, key text) returns boolean
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_in_app boolean;
  v_email boolean;
  v_address text;
begin
  select coalesce(p.in_app, true), coalesce(p.email, true), u.email
    into v_in_app, v_email, v_address
  from app_public.users u
  left join app_public.notification_preferences p on p.user_id = u.id and p.type = notify.type
  where u.id = notify.user_id;
  if v_address is null then
    return false; -- the user is gone
  end if;
  if v_in_app then
    insert into app_public.notifications (user_id, type, title, body, data, key, emailed)
    values (notify.user_id, notify.type, notify.title, coalesce(notify.body, ''), coalesce(notify.data, '{}'), notify.key, v_email)
    on conflict (key) do nothing;
  end if;
  if v_email then
    perform app_private.queue_email('notification:' || notify.key, 'notification', v_address,
      jsonb_build_object('title', notify.title, 'body', coalesce(notify.body, '')));
  end if;
  return v_in_app or v_email;
end;
$$;
comment on function app_private.notify(bigint, text, text, text, jsonb, text) is E'Tells a user something, per their preferences for the type: an in-app notification and/or an email now (through the email log). key makes it idempotent: a second call with the same key adds nothing. Returns false when the preferences (or a deleted user) leave nothing to do.';

create or replace function app_private.queue_notification_digests(as_of timestamptz) returns integer
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  -- One email per user per UTC day (the key carries the date), so a second run queues nothing.
  -- Notifications already emailed on their own are left out.
  with due as (
    select u.id, u.email, count(*) as n,
           string_agg('- ' || n.title, E'\n' order by n.created_at) as items
    from app_public.notifications n
    join app_public.users u on u.id = n.user_id
    left join app_public.notification_preferences p on p.user_id = n.user_id and p.type = n.type
    where not n.is_read and not n.emailed
      and n.created_at > as_of - interval '24 hours' and n.created_at <= as_of
      and coalesce(p.email, true)
    group by u.id, u.email
  )
  select count(app_private.queue_email(
    'digest:user:' || d.id || ':' || to_char(as_of at time zone 'UTC', 'YYYY-MM-DD'),
    'digest', d.email, jsonb_build_object('count', d.n, 'items', d.items)))::integer
  from due d;
$$;

--------------------------------------------------------------------------------------------
-- Enqueueing in bulk from triggers: one task for many rows, given as arrays of scalars. At
-- 100,000 rows this costs about a third less than building job_spec composites and passing
-- them through app_private.add_jobs, which unpacks and rebuilds them to fill the defaults.

create function app_private.schedule_jobs(identifier text, payloads json[], run_ats timestamptz[], job_keys text[])
returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_task app_private.tasks;
  v_count integer;
begin
  if coalesce(cardinality(payloads), 0) = 0 then
    return 0;
  end if;
  select * into v_task from app_private.tasks t where t.identifier = schedule_jobs.identifier;
  if not found then
    raise exception 'Unknown task %', identifier using errcode = 'TASKU';
  end if;
  select count(*) into v_count from graphile_worker.add_jobs(array(
    select row(identifier, u.payload, null, u.run_at, v_task.max_attempts, u.job_key, v_task.priority, null)::graphile_worker.job_spec
    from unnest(payloads, run_ats, job_keys) as u(payload, run_at, job_key)));
  return v_count;
end;
$$;
comment on function app_private.schedule_jobs(text, json[], timestamptz[], text[]) is E'Enqueues one job of a task per element: payloads[i] at run_ats[i] (null: now) under job_keys[i] (null: no key), with the task''s declared defaults. For statement-level triggers; unknown tasks raise TASKU. Returns how many.';

--------------------------------------------------------------------------------------------
-- Companies, their members, worker profiles, job postings and applications

create table app_public.companies (
  id bigint primary key generated always as identity,
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger _100_timestamps before insert or update on app_public.companies
  for each row execute procedure app_private.tg__timestamps();
comment on table app_public.companies is E'An employer on the marketplace. Its members make offers to workers.';

create table app_public.company_members (
  company_id bigint not null references app_public.companies (id) on delete cascade,
  user_id bigint not null references app_public.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (company_id, user_id)
);
create index company_members_user_id_idx on app_public.company_members (user_id);
comment on table app_public.company_members is E'Users who act for a company: they create, send and withdraw its offers and are told when one is accepted or declined.';

create table app_public.workers (
  id bigint primary key generated always as identity,
  user_id bigint unique references app_public.users (id) on delete set null,
  name text not null check (length(name) between 1 and 200),
  headline text check (length(headline) <= 500),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger _100_timestamps before insert or update on app_public.workers
  for each row execute procedure app_private.tg__timestamps();
comment on table app_public.workers is E'A worker''s profile. Linked to a user when the worker has signed up; only a linked worker can answer offers and be notified.';

create table app_public.jobs (
  id bigint primary key generated always as identity,
  company_id bigint not null references app_public.companies (id) on delete cascade,
  title text not null check (length(title) between 1 and 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index jobs_company_id_idx on app_public.jobs (company_id);
create trigger _100_timestamps before insert or update on app_public.jobs
  for each row execute procedure app_private.tg__timestamps();
comment on table app_public.jobs is E'A job a company is hiring for (not a background job).';

create table app_public.job_applications (
  id bigint primary key generated always as identity,
  job_id bigint not null references app_public.jobs (id) on delete cascade,
  worker_id bigint not null references app_public.workers (id) on delete cascade,
  created_at timestamptz not null default now(),
  unique (job_id, worker_id)
);
create index job_applications_worker_id_idx on app_public.job_applications (worker_id);
comment on table app_public.job_applications is E'A worker applying for a job; at most one offer is made per application.';

-- Row-level security helpers: the signed-in user's companies and worker profiles. security
-- definer so the policies below do not recurse through each other's RLS.
create function app_hidden.my_company_ids() returns setof bigint
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select m.company_id from app_public.company_members m where m.user_id = app_public.current_user_id();
$$;
comment on function app_hidden.my_company_ids() is E'Companies the signed-in user is a member of.';

create function app_hidden.my_worker_ids() returns setof bigint
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select w.id from app_public.workers w where w.user_id = app_public.current_user_id();
$$;
comment on function app_hidden.my_worker_ids() is E'The worker profile of the signed-in user (zero or one).';

--------------------------------------------------------------------------------------------
-- Offers

create table app_public.offers (
  id bigint primary key generated always as identity,
  application_id bigint not null unique references app_public.job_applications (id) on delete cascade,
  -- Copied from the application by the rules trigger, so that row-level security and company
  -- dashboards need no joins.
  company_id bigint not null references app_public.companies (id) on delete cascade,
  worker_id bigint not null references app_public.workers (id) on delete cascade,
  message text not null default '' check (length(message) <= 5000),
  start_date date not null,
  end_date date not null,
  expiration_days integer not null default 7 check (expiration_days > 0 and expiration_days <= 365),
  status text not null default 'DRAFT' check (status in ('DRAFT', 'SENT', 'ACCEPTED', 'REJECTED', 'WITHDRAWN', 'EXPIRED')),
  sent_at timestamptz,
  expires_at timestamptz,
  accepted_at timestamptz,
  rejected_at timestamptz,
  rejection_reason text check (rejection_reason in ('RATE_TOO_LOW', 'DATES_UNAVAILABLE', 'ACCEPTED_ANOTHER_OFFER', 'LOCATION', 'OTHER')),
  rejection_reason_description text check (length(rejection_reason_description) <= 200),
  withdrawn_by bigint references app_public.users (id) on delete set null,
  withdrawn_at timestamptz,
  withdrawal_reason text check (length(withdrawal_reason) <= 1500),
  expired_at timestamptz,
  is_read boolean not null default false,
  external_ref text check (length(external_ref) <= 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (end_date >= start_date),
  check (status = 'DRAFT' or (sent_at is not null and expires_at is not null)),
  check (status <> 'REJECTED' or rejection_reason is not null)
);
create index offers_company_status_idx on app_public.offers (company_id, status);
create index offers_worker_id_idx on app_public.offers (worker_id);
create index offers_withdrawn_by_idx on app_public.offers (withdrawn_by) where withdrawn_by is not null;
create index offers_external_ref_idx on app_public.offers (external_ref);
-- The overdue sweep walks only SENT offers, oldest expiry first.
create index offers_sent_expires_at_idx on app_public.offers (expires_at) where status = 'SENT';
alter table app_public.offers enable row level security;
create policy select_as_worker on app_public.offers for select
  using (worker_id in (select app_hidden.my_worker_ids()) and status <> 'DRAFT');
create policy select_as_company_member on app_public.offers for select
  using (company_id in (select app_hidden.my_company_ids()));
create policy select_as_admin on app_public.offers for select using (app_hidden.current_user_is_admin());
grant select on app_public.offers to :DATABASE_VISITOR;
comment on table app_public.offers is E'An offer of work to the worker behind a job application, one per application. DRAFT -> SENT (sendOffer; expires_at = now + expiration_days) -> ACCEPTED | REJECTED | WITHDRAWN | EXPIRED. A SENT offer expires at its expires_at exactly (a job scheduled when it was sent) and an hourly sweep catches any that were missed. Changed through the mutations only; a DBA''s UPDATE fires the same rules, jobs and notifications. Workers see their offers once sent; company members see all of their company''s.';
comment on column app_public.offers.company_id is E'@behavior +filterBy +orderBy +groupBy\nThe company making the offer (from the application; not writable).';
comment on column app_public.offers.worker_id is E'The worker the offer is for (from the application; not writable).';
comment on column app_public.offers.status is E'DRAFT, SENT, ACCEPTED, REJECTED, WITHDRAWN or EXPIRED.';
comment on column app_public.offers.expiration_days is E'How many days the worker has to answer once the offer is sent (1 to 365).';
comment on column app_public.offers.sent_at is E'When the offer was sent (or sent again after expiring).';
comment on column app_public.offers.expires_at is E'When a SENT offer expires; set when it is sent or renewed, never by clients.';
comment on column app_public.offers.rejection_reason is E'Why the worker declined: RATE_TOO_LOW, DATES_UNAVAILABLE, ACCEPTED_ANOTHER_OFFER, LOCATION or OTHER.';
comment on column app_public.offers.rejection_reason_description is E'The worker''s own words on declining, at most 200 characters.';
comment on column app_public.offers.withdrawal_reason is E'Why the company withdrew the offer, at most 1500 characters.';
comment on column app_public.offers.is_read is E'Whether the worker has read the offer; a renewal makes it unread again.';
comment on column app_public.offers.external_ref is E'The caller''s own reference for the offer (indexed, not unique).';

create function app_public.offers_time_to_accept(o app_public.offers) returns double precision
language sql immutable
set search_path to pg_catalog, public, pg_temp
as $$
  select extract(epoch from o.accepted_at - o.sent_at)::double precision;
$$;
comment on function app_public.offers_time_to_accept(app_public.offers) is E'@behavior +typeField +orderBy +filterBy\nSeconds from sending to acceptance, for accepted offers (null otherwise). Averages of it make a company''s time-to-accept.';

create table app_public.placements (
  id bigint primary key generated always as identity,
  offer_id bigint not null unique references app_public.offers (id) on delete cascade,
  worker_id bigint not null references app_public.workers (id) on delete cascade,
  company_id bigint not null references app_public.companies (id) on delete cascade,
  job_id bigint not null references app_public.jobs (id) on delete cascade,
  start_date date not null,
  end_date date not null,
  created_at timestamptz not null default now(),
  check (end_date >= start_date)
);
create index placements_worker_id_idx on app_public.placements (worker_id);
create index placements_company_id_idx on app_public.placements (company_id);
create index placements_job_id_idx on app_public.placements (job_id);
alter table app_public.placements enable row level security;
create policy select_as_worker on app_public.placements for select using (worker_id in (select app_hidden.my_worker_ids()));
create policy select_as_company_member on app_public.placements for select using (company_id in (select app_hidden.my_company_ids()));
create policy select_as_admin on app_public.placements for select using (app_hidden.current_user_is_admin());
grant select on app_public.placements to :DATABASE_VISITOR;
comment on table app_public.placements is E'A worker engaged by a company: created in the same transaction as the offer''s acceptance, on every write path.';

-- Visibility of the surrounding tables follows the offers.
alter table app_public.companies enable row level security;
create policy select_as_member on app_public.companies for select using (id in (select app_hidden.my_company_ids()));
create policy select_as_offered_worker on app_public.companies for select using (
  exists (select 1 from app_public.offers o where o.company_id = companies.id and o.worker_id in (select app_hidden.my_worker_ids()) and o.status <> 'DRAFT'));
create policy select_as_admin on app_public.companies for select using (app_hidden.current_user_is_admin());
grant select on app_public.companies to :DATABASE_VISITOR;

alter table app_public.company_members enable row level security;
create policy select_as_member on app_public.company_members for select using (company_id in (select app_hidden.my_company_ids()));
create policy select_as_admin on app_public.company_members for select using (app_hidden.current_user_is_admin());
grant select on app_public.company_members to :DATABASE_VISITOR;

alter table app_public.workers enable row level security;
create policy select_own on app_public.workers for select using (user_id = app_public.current_user_id());
create policy select_as_applied_company on app_public.workers for select using (
  exists (select 1 from app_public.job_applications a join app_public.jobs j on j.id = a.job_id
          where a.worker_id = workers.id and j.company_id in (select app_hidden.my_company_ids())));
create policy select_as_admin on app_public.workers for select using (app_hidden.current_user_is_admin());
grant select on app_public.workers to :DATABASE_VISITOR;

alter table app_public.jobs enable row level security;
create policy select_signed_in on app_public.jobs for select using (app_public.current_user_id() is not null);
grant select on app_public.jobs to :DATABASE_VISITOR;

alter table app_public.job_applications enable row level security;
create policy select_own on app_public.job_applications for select using (worker_id in (select app_hidden.my_worker_ids()));
create policy select_as_company_member on app_public.job_applications for select using (
  exists (select 1 from app_public.jobs j where j.id = job_applications.job_id and j.company_id in (select app_hidden.my_company_ids())));
create policy select_as_admin on app_public.job_applications for select using (app_hidden.current_user_is_admin());
grant select on app_public.job_applications to :DATABASE_VISITOR;

--------------------------------------------------------------------------------------------
-- Row rules, on every write path

create function app_private.tg_offers__rules() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Kept lean: it runs for every row of a bulk statement.
  if tg_op = 'INSERT' then
    select j.company_id, a.worker_id into new.company_id, new.worker_id
    from app_public.job_applications a join app_public.jobs j on j.id = a.job_id
    where a.id = new.application_id;
    new.created_at := now();
    new.updated_at := now();
  else
    if (new.application_id, new.company_id, new.worker_id, new.created_at)
       is distinct from (old.application_id, old.company_id, old.worker_id, old.created_at) then
      raise exception 'An offer''s application, company, worker and created_at cannot change (offer %)', old.id using errcode = 'OFFIX';
    end if;
    new.updated_at := case when old.updated_at >= now() then old.updated_at + interval '1 millisecond' else now() end;
  end if;
  if tg_op = 'INSERT' or new.status <> old.status then
    case new.status
      when 'SENT' then
        -- Sent (or sent again after expiring): a fresh answer window unless the writer set
        -- expires_at itself, and unread.
        new.sent_at := now();
        new.is_read := false;
        if new.expires_at is null or (tg_op = 'UPDATE' and new.expires_at = old.expires_at) then
          new.expires_at := now() + make_interval(days => new.expiration_days);
        end if;
      when 'ACCEPTED' then new.accepted_at := coalesce(new.accepted_at, now());
      when 'REJECTED' then new.rejected_at := coalesce(new.rejected_at, now());
      when 'WITHDRAWN' then new.withdrawn_at := coalesce(new.withdrawn_at, now());
      when 'EXPIRED' then new.expired_at := coalesce(new.expired_at, now());
      else null;
    end case;
  elsif new.status = 'SENT'
        and (new.message, new.start_date, new.end_date, new.expiration_days)
            is distinct from (old.message, old.start_date, old.end_date, old.expiration_days) then
    -- A sent offer whose content changes is renewed: unread again.
    new.is_read := false;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_offers__rules() is E'Before each write of an offer: copies company and worker from the application and keeps them fixed (OFFIX), stamps times, starts the answer window when the offer becomes SENT, and makes a renewed offer unread.';
create trigger _200_rules before insert or update on app_public.offers
  for each row execute procedure app_private.tg_offers__rules();

--------------------------------------------------------------------------------------------
-- Statement-level triggers: jobs, placements and notifications for a whole statement at once.
-- Notifications go through a fan-out job per (event, 1000 offers) so that a bulk statement
-- pays for one job per thousand rows, not one per recipient; the fan-out then enqueues one
-- offers__notify job per recipient, so one failure never holds up another.

create function app_private.offer_notification_batches(event text, ids bigint[]) returns setof graphile_worker.job_spec
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select row('offers__queue_notifications',
             json_build_object('event', event, 'ids', b.ids, 'change', pg_catalog.pg_current_xact_id()::text),
             null, null, null, null, null, null)::graphile_worker.job_spec
  from (
    select array_agg(u.id order by u.id) as ids
    from unnest(ids) with ordinality as u(id, n)
    group by (u.n - 1) / 1000
  ) b;
$$;
comment on function app_private.offer_notification_batches(text, bigint[]) is E'Job specs that fan an offer event out to its recipients, 1000 offers per job.';

create function app_private.tg_offers__after_insert() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.schedule_jobs('offers__expire',
    array_agg(('{"id":' || n.id || '}')::json), array_agg(n.expires_at), array_agg('offers:' || n.id || ':expire'))
  from new_rows n where n.status = 'SENT';
  perform app_private.add_jobs(array(
    select s from app_private.offer_notification_batches('sent', array(select n.id from new_rows n where n.status = 'SENT')) s));
  insert into app_public.placements (offer_id, worker_id, company_id, job_id, start_date, end_date)
  select n.id, n.worker_id, n.company_id, a.job_id, n.start_date, n.end_date
  from new_rows n join app_public.job_applications a on a.id = n.application_id
  where n.status = 'ACCEPTED'
  on conflict (offer_id) do nothing;
  return null;
end;
$$;
create trigger _500_after_insert after insert on app_public.offers
  referencing new table as new_rows
  for each statement execute procedure app_private.tg_offers__after_insert();

create function app_private.tg_offers__after_update() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_jobs bigint;
  v_left_sent text[];
begin
  -- Dynamic SQL on purpose: a cached plan keeps the row estimate of the transition tables from
  -- the first statement it was planned for (often one row, so a nested loop), which turns a
  -- later 10,000-row statement quadratic. Planning each time costs well under a millisecond.
  execute $sql$
  with changes as materialized (
    select n.id, n.worker_id, n.company_id, n.application_id, n.start_date, n.end_date,
      case
        when n.status = o.status then
          case when n.status = 'SENT' and (n.message, n.start_date, n.end_date, n.expiration_days)
                    is distinct from (o.message, o.start_date, o.end_date, o.expiration_days) then 'renewed' end
        when n.status = 'SENT' then case when o.status = 'DRAFT' then 'sent' else 'renewed' end
        when n.status in ('EXPIRED', 'ACCEPTED', 'REJECTED') then lower(n.status)
      end as event,
      -- An expiry job to (re)schedule: became SENT, or expires_at moved while SENT.
      case when n.status = 'SENT' and (o.status <> 'SENT' or o.expires_at is distinct from n.expires_at) then n.expires_at end as expires_at,
      o.status = 'SENT' and n.status <> 'SENT' as left_sent
    from new_rows n join old_rows o on o.id = n.id
    where n.status <> o.status or n.expires_at is distinct from o.expires_at
       or (n.status = 'SENT' and (n.message, n.start_date, n.end_date, n.expiration_days)
           is distinct from (o.message, o.start_date, o.end_date, o.expiration_days))
  ),
  placed as (
    insert into app_public.placements (offer_id, worker_id, company_id, job_id, start_date, end_date)
    select c.id, c.worker_id, c.company_id, a.job_id, c.start_date, c.end_date
    from changes c join app_public.job_applications a on a.id = c.application_id
    where c.event = 'accepted'
    on conflict (offer_id) do nothing
  )
  select
    (select app_private.schedule_jobs('offers__expire',
       array_agg(('{"id":' || c.id || '}')::json), array_agg(c.expires_at), array_agg('offers:' || c.id || ':expire'))
     from changes c where c.expires_at is not null)
    + (select count(*) from app_private.add_jobs(array(
        select s from (select c.event, array_agg(c.id) as ids from changes c where c.event is not null group by c.event) e,
          lateral app_private.offer_notification_batches(e.event, e.ids) s))),
    array(select 'offers:' || c.id || ':expire' from changes c where c.left_sent)
  $sql$ into v_jobs, v_left_sent;
  -- Leaving SENT removes the expiry job; complete_jobs leaves a running one alone (it re-reads
  -- the offer and does nothing).
  if cardinality(v_left_sent) > 0 then
    perform graphile_worker.complete_jobs(array(select j.id from graphile_worker.jobs j where j.key = any (v_left_sent)));
  end if;
  return null;
end;
$$;
create trigger _500_after_update after update on app_public.offers
  referencing old table as old_rows new table as new_rows
  for each statement execute procedure app_private.tg_offers__after_update();

create function app_private.tg_offers__after_delete() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.complete_jobs(array(
    select j.id from graphile_worker.jobs j
    where j.key = any (array(select 'offers:' || o.id || ':expire' from old_rows o where o.status = 'SENT'))));
  return null;
end;
$$;
create trigger _600_after_delete after delete on app_public.offers
  referencing old table as old_rows
  for each statement execute procedure app_private.tg_offers__after_delete();

comment on function app_private.tg_offers__after_insert() is E'After an insert statement: expiry jobs for offers inserted as SENT, their "new offer" notifications, placements for offers inserted as ACCEPTED.';
comment on function app_private.tg_offers__after_update() is E'After an update statement: (re)schedules or removes expiry jobs, enqueues notification fan-out jobs (sent, renewed, expired, accepted, rejected), creates placements on acceptance. Each kind of job is enqueued with one call per statement.';
comment on function app_private.tg_offers__after_delete() is E'After a delete statement: removes the expiry jobs of deleted SENT offers.';

-- The fan-out: one offers__notify job per (offer, recipient). The worker is told of sent,
-- renewed and expired offers (if the profile is linked to a user); every company member of
-- accepted and rejected ones.
create function app_private.queue_offer_notifications(event text, ids bigint[], change text) returns integer
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  select count(*)::integer from app_private.add_jobs(array(
    select row('offers__notify',
               json_build_object('offerId', o.id, 'event', event, 'userId', r.user_id, 'change', change),
               null, null, null, null, null, null)::graphile_worker.job_spec
    from app_public.offers o
    cross join lateral (
      select w.user_id from app_public.workers w
      where event in ('sent', 'renewed', 'expired') and w.id = o.worker_id and w.user_id is not null
      union all
      select m.user_id from app_public.company_members m
      where event in ('accepted', 'rejected') and m.company_id = o.company_id
    ) r
    where o.id = any (ids)));
$$;
comment on function app_private.queue_offer_notifications(text, bigint[], text) is E'Enqueues one offers__notify job per recipient of an offer event, for the given offers. change identifies the transaction that made the change, so a repeated fan-out notifies no one twice. Returns how many jobs.';

--------------------------------------------------------------------------------------------
-- Transitions: one guarded function each. security definer because clients have no write
-- grants on offers; every function checks who is asking before it writes.

-- The offer, locked, if the signed-in user may act on it as `actor` (company | worker).
create function app_private.load_offer_for(offer_id bigint, actor text) returns app_public.offers
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers;
begin
  select * into v_offer from app_public.offers o where o.id = offer_id for update;
  if not found
     or (v_offer.company_id not in (select app_hidden.my_company_ids())
         and (v_offer.worker_id not in (select app_hidden.my_worker_ids()) or v_offer.status = 'DRAFT')) then
    raise exception 'Offer % not found', offer_id using errcode = 'OFNFD';
  end if;
  if actor = 'company' and v_offer.company_id not in (select app_hidden.my_company_ids()) then
    raise exception 'Only a member of the company can do this to offer %', offer_id using errcode = 'OFPRM';
  end if;
  if actor = 'worker' and v_offer.worker_id not in (select app_hidden.my_worker_ids()) then
    raise exception 'Only the worker the offer is for can do this to offer %', offer_id using errcode = 'OFPRM';
  end if;
  return v_offer;
end;
$$;

-- A SENT offer the signed-in worker may still answer (accept or decline), locked.
create function app_private.answerable_offer(offer_id bigint, verb text) returns app_public.offers
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.load_offer_for(offer_id, 'worker');
begin
  if v_offer.status = 'SENT' and v_offer.expires_at <= now() or v_offer.status = 'EXPIRED' then
    raise exception 'Offer % has expired', offer_id using errcode = 'OFEXD';
  end if;
  if v_offer.status <> 'SENT' then
    raise exception 'Offer % is % and cannot be %', offer_id, v_offer.status, verb using errcode = 'OFSNT';
  end if;
  return v_offer;
end;
$$;

-- The rules for what a company writes into an offer, as coded errors (the table's checks would
-- only say CHECK_VIOLATION).
create function app_private.check_offer_content(message text, start_date date, end_date date, expiration_days integer) returns void
language plpgsql immutable
set search_path to pg_catalog, public, pg_temp
as $$
begin
  if start_date is null or end_date is null or end_date < start_date then
    raise exception 'end_date must be on or after start_date' using errcode = 'OFDAT';
  end if;
  if expiration_days is null or expiration_days not between 1 and 365 then
    raise exception 'expiration_days must be between 1 and 365' using errcode = 'OFEXP';
  end if;
  if length(coalesce(message, '')) > 5000 then
    raise exception 'message is longer than 5000 characters' using errcode = 'OFMSG';
  end if;
end;
$$;

create function app_public.create_offer(
  application_id bigint, message text, start_date date, end_date date,
  expiration_days integer default 7, external_ref text default null
) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_company bigint;
  v_offer app_public.offers;
begin
  select j.company_id into v_company
  from app_public.job_applications a join app_public.jobs j on j.id = a.job_id
  where a.id = create_offer.application_id;
  if v_company is null or v_company not in (select app_hidden.my_company_ids()) then
    raise exception 'Application % not found', application_id using errcode = 'OFAPP';
  end if;
  if exists (select 1 from app_public.offers o where o.application_id = create_offer.application_id) then
    raise exception 'Application % already has an offer', application_id using errcode = 'OFDUP';
  end if;
  perform app_private.check_offer_content(message, start_date, end_date, expiration_days);
  insert into app_public.offers (application_id, message, start_date, end_date, expiration_days, external_ref)
  values (create_offer.application_id, coalesce(message, ''), start_date, end_date, expiration_days, external_ref)
  returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.create_offer(bigint, text, date, date, integer, text) is E'A company member drafts an offer for a job application of their company (one offer per application). The worker sees nothing until it is sent.';

create function app_public.update_offer(offer_id bigint, message text, start_date date, end_date date, expiration_days integer)
returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.load_offer_for(offer_id, 'company');
begin
  if v_offer.status not in ('DRAFT', 'SENT', 'EXPIRED') then
    raise exception 'Offer % is % and can no longer be changed', offer_id, v_offer.status using errcode = 'OFFIN';
  end if;
  perform app_private.check_offer_content(message, start_date, end_date, expiration_days);
  -- Changing a sent or expired offer renews it: SENT again, with a fresh answer window.
  update app_public.offers o set
    message = coalesce(update_offer.message, ''),
    start_date = update_offer.start_date,
    end_date = update_offer.end_date,
    expiration_days = update_offer.expiration_days,
    status = case when o.status = 'EXPIRED' then 'SENT' else o.status end,
    expires_at = case when o.status = 'DRAFT' then o.expires_at else now() + make_interval(days => update_offer.expiration_days) end
  where o.id = offer_id
  returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.update_offer(bigint, text, date, date, integer) is E'A company member changes an offer''s content. A DRAFT just changes; a SENT or EXPIRED offer is renewed: SENT with expires_at = now + expiration_days, unread again, and the worker is told. Accepted, rejected and withdrawn offers cannot change (OFFIN).';

create function app_public.send_offer(offer_id bigint) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.load_offer_for(offer_id, 'company');
begin
  if v_offer.status <> 'DRAFT' then
    raise exception 'Offer % is % and not a draft', offer_id, v_offer.status using errcode = 'OFDRF';
  end if;
  update app_public.offers o set status = 'SENT', expires_at = null where o.id = offer_id returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.send_offer(bigint) is E'A company member sends a draft offer: it becomes SENT, expires_at = now + expiration_days, and the worker is told.';

create function app_public.withdraw_offer(offer_id bigint, reason text) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.load_offer_for(offer_id, 'company');
begin
  if v_offer.status <> 'SENT' then
    raise exception 'Offer % is % and cannot be withdrawn', offer_id, v_offer.status using errcode = 'OFSNT';
  end if;
  if coalesce(btrim(reason), '') = '' or length(reason) > 1500 then
    raise exception 'A withdrawal reason of 1 to 1500 characters is required' using errcode = 'OFWDR';
  end if;
  update app_public.offers o set status = 'WITHDRAWN', withdrawn_by = app_public.current_user_id(), withdrawal_reason = reason
  where o.id = offer_id returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.withdraw_offer(bigint, text) is E'A company member withdraws a sent offer, giving a reason (at most 1500 characters). Its expiry job is removed.';

create function app_public.accept_offer(offer_id bigint) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.answerable_offer(offer_id, 'accepted');
begin
  update app_public.offers o set status = 'ACCEPTED', is_read = true where o.id = offer_id returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.accept_offer(bigint) is E'The worker accepts a sent offer before it expires: a placement is created and the company''s members are told.';

create function app_public.reject_offer(offer_id bigint, reason text, description text default null) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.answerable_offer(offer_id, 'declined');
begin
  if reason is null or reason not in ('RATE_TOO_LOW', 'DATES_UNAVAILABLE', 'ACCEPTED_ANOTHER_OFFER', 'LOCATION', 'OTHER') then
    raise exception 'A reason is required: RATE_TOO_LOW, DATES_UNAVAILABLE, ACCEPTED_ANOTHER_OFFER, LOCATION or OTHER' using errcode = 'OFRSN';
  end if;
  if length(description) > 200 then
    raise exception 'The description is longer than 200 characters' using errcode = 'OFDSC';
  end if;
  update app_public.offers o set status = 'REJECTED', is_read = true, rejection_reason = reason,
    rejection_reason_description = nullif(btrim(description), '')
  where o.id = offer_id returning * into v_offer;
  return v_offer;
end;
$$;
comment on function app_public.reject_offer(bigint, text, text) is E'The worker declines a sent offer before it expires, with a reason (RATE_TOO_LOW, DATES_UNAVAILABLE, ACCEPTED_ANOTHER_OFFER, LOCATION or OTHER) and an optional description of at most 200 characters. The company''s members are told.';

create function app_public.mark_offer_read(offer_id bigint) returns app_public.offers
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_offer app_public.offers := app_private.load_offer_for(offer_id, 'worker');
begin
  if not v_offer.is_read then
    update app_public.offers o set is_read = true where o.id = offer_id returning * into v_offer;
  end if;
  return v_offer;
end;
$$;
comment on function app_public.mark_offer_read(bigint) is E'The worker marks an offer read.';

--------------------------------------------------------------------------------------------
-- The safety net: expire SENT offers whose expiry job was lost

create function app_private.sweep_overdue_offers(batch_size integer, out expired integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- The update fires the same triggers as any other: notifications, job removal.
  with due as (
    update app_public.offers o set status = 'EXPIRED'
    where o.id = any (array(
      select d.id from app_public.offers d
      where d.status = 'SENT' and d.expires_at <= now()
      order by d.expires_at
      limit batch_size
      for update skip locked))
    and o.status = 'SENT'
    returning 1
  )
  select count(*) into expired from due;
  remaining := case when expired < batch_size then 0 else (
    select count(*) from app_public.offers d where d.status = 'SENT' and d.expires_at <= now()) end;
end;
$$;
comment on function app_private.sweep_overdue_offers(integer) is E'Expires up to batch_size SENT offers past their expires_at (oldest first, skipping rows locked by a running transaction). Returns how many, and how many overdue remain (0 unless the batch was full).';
