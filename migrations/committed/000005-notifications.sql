--! Previous: sha1:6e6da6ed2034bb19ef964f8e282b8e21da790758
--! Hash: sha1:25b85c6f8abbdc9ee0528b83c4bddfdfd6cdc915
--! Message: notifications

-- In-app notifications, per-type preferences, the daily digest and notification retention. Why:
-- every module tells users things; they read them in the app, choose per type what also reaches
-- them by email, and get at most one digest email a day of what they have not read.

drop function if exists app_private.sweep_notifications(integer, interval);
drop function if exists app_private.queue_notification_digests(timestamptz);
drop function if exists app_public.mark_all_notifications_read();
drop function if exists app_public.mark_notifications_read(bigint[]);
drop table if exists app_public.notification_preferences;
drop table if exists app_public.notifications;

create table app_public.notifications (
  id bigint primary key generated always as identity,
  user_id bigint not null references app_public.users (id) on delete cascade,
  type text not null check (type ~ '^[a-z][a-z0-9_.]{0,62}$'),
  title text not null check (length(title) between 1 and 200),
  body text not null default '' check (length(body) <= 5000),
  data jsonb not null default '{}',
  is_read boolean not null default false,
  read_at timestamptz,
  created_at timestamptz not null default now(),
  check (is_read = (read_at is not null))
);
create index notifications_user_created_idx on app_public.notifications (user_id, created_at desc);
create index notifications_unread_created_idx on app_public.notifications (created_at) where not is_read;
create index notifications_read_created_idx on app_public.notifications (created_at) where is_read;
alter table app_public.notifications enable row level security;
create policy select_own on app_public.notifications for select using (user_id = app_public.current_user_id());
grant select on app_public.notifications to :DATABASE_VISITOR;
comment on table app_public.notifications is E'Messages for a user, shown in the app. Each user sees only their own and marks them read with markNotificationsRead / markAllNotificationsRead (no direct updates). Read ones are deleted after NOTIFICATION_RETENTION_DAYS (30).';
comment on column app_public.notifications.type is E'What it is about, e.g. offer.expired; preferences are per type.';
comment on column app_public.notifications.data is E'Ids of the records it is about, for links in the app.';

create table app_public.notification_preferences (
  user_id bigint not null default app_public.current_user_id() references app_public.users (id) on delete cascade,
  type text not null check (type ~ '^[a-z][a-z0-9_.]{0,62}$'),
  in_app boolean not null default true,
  email boolean not null default true,
  primary key (user_id, type)
);
alter table app_public.notification_preferences enable row level security;
create policy manage_own on app_public.notification_preferences for all
  using (user_id = app_public.current_user_id()) with check (user_id = app_public.current_user_id());
grant select, delete on app_public.notification_preferences to :DATABASE_VISITOR;
grant insert (type, in_app, email), update (in_app, email) on app_public.notification_preferences to :DATABASE_VISITOR;
comment on table app_public.notification_preferences is E'Per-type choices: in the app, and by email (the daily digest). No row means both are on.';

create function app_public.mark_notifications_read(ids bigint[]) returns integer
language sql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
  with marked as (
    update app_public.notifications n set is_read = true, read_at = now()
    where n.id = any (ids) and n.user_id = app_public.current_user_id() and not n.is_read
    returning 1
  )
  select count(*)::integer from marked;
$$;
comment on function app_public.mark_notifications_read(bigint[]) is E'Marks the given notifications of the signed-in user as read; ids of other users are ignored. Returns how many changed.';

create function app_public.mark_all_notifications_read() returns integer
language sql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
  with marked as (
    update app_public.notifications n set is_read = true, read_at = now()
    where n.user_id = app_public.current_user_id() and not n.is_read
    returning 1
  )
  select count(*)::integer from marked;
$$;
comment on function app_public.mark_all_notifications_read() is E'Marks every unread notification of the signed-in user as read. Returns how many changed.';

create function app_private.queue_notification_digests(as_of timestamptz) returns integer
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  -- One email per user per UTC day (the key carries the date), so a second run queues nothing.
  with due as (
    select u.id, u.email, count(*) as n,
           string_agg('- ' || n.title, E'\n' order by n.created_at) as items
    from app_public.notifications n
    join app_public.users u on u.id = n.user_id
    left join app_public.notification_preferences p on p.user_id = n.user_id and p.type = n.type
    where not n.is_read
      and n.created_at > as_of - interval '24 hours' and n.created_at <= as_of
      and coalesce(p.email, true)
    group by u.id, u.email
  )
  select count(app_private.queue_email(
    'digest:user:' || d.id || ':' || to_char(as_of at time zone 'UTC', 'YYYY-MM-DD'),
    'digest', d.email, jsonb_build_object('count', d.n, 'items', d.items)))::integer
  from due d;
$$;
comment on function app_private.queue_notification_digests(timestamptz) is E'Queues the daily digest: one email per user with unread notifications from the 24 hours before as_of whose email preference allows it. At most one per user per UTC day. Returns how many were newly queued.';

create function app_private.sweep_notifications(batch_size integer, older_than interval, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_public.notifications n
    where n.id = any (array(
      select e.id from app_public.notifications e where e.is_read and e.created_at < now() - older_than limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_public.notifications n where n.is_read and n.created_at < now() - older_than) end;
end;
$$;
comment on function app_private.sweep_notifications(integer, interval) is E'Deletes up to batch_size read notifications older than older_than. Returns how many, and how many remain eligible (0 unless the batch was full).';
