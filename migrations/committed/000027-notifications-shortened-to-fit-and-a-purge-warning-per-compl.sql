--! Previous: sha1:eae8d953ae2d28e7c326a7e65ab3d54a635cf734
--! Hash: sha1:fbe9abd7c1084d7fd111970dfbe5494cc4de1c61
--! Message: notifications shortened to fit, and a purge warning per completion

-- Notifications built from users' own fields, shortened to fit; a purge warning per completion.
--
-- Titles and bodies are built from fields users write (a company's name and a job's title, up to
-- 200 characters each; an exchange's name, up to 200), and together they can pass the
-- notifications table's limits (title 200, body 5000). The insert then failed: an offer's
-- notification job failed on every retry (no notification, no email), a draw that could not be
-- made left its exchange in MATCHING for good, and one exchange with a long name stopped the daily
-- purge sweep (its warnings come first) for every exchange. notify() now shortens what is too long,
-- ending it with an ellipsis, in the app and in the email alike.
create or replace function app_private.notify(user_id bigint, type text, title text, body text, data jsonb, key text) returns boolean
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_in_app boolean;
  v_email boolean;
  v_address text;
  v_title text := case when length(notify.title) > 200 then left(notify.title, 199) || '…' else notify.title end;
  v_body text := coalesce(notify.body, '');
begin
  if length(v_body) > 5000 then
    v_body := left(v_body, 4999) || '…';
  end if;
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
    values (notify.user_id, notify.type, v_title, v_body, coalesce(notify.data, '{}'), notify.key, v_email)
    on conflict (key) do nothing;
  end if;
  if v_email then
    perform app_private.queue_email('notification:' || notify.key, 'notification', v_address,
      jsonb_build_object('title', v_title, 'body', v_body));
  end if;
  return v_in_app or v_email;
end;
$$;
comment on function app_private.notify(bigint, text, text, text, jsonb, text) is E'Tells a user something, per their preferences for the type: an in-app notification and/or an email now (through the email log). A title over 200 characters or a body over 5,000 is shortened, ending with an ellipsis. key makes it idempotent: a second call with the same key adds nothing. Returns false when the preferences (or a deleted user) leave nothing to do.';

-- A reopened exchange that completes again is warned again (the rules trigger clears
-- purge_warning_sent_at for that), but the warning's key named only the exchange, so the second
-- warning's notification and email were taken for the first's and dropped: the exchange was then
-- purged unannounced. The key now names the completion it warns about.
create or replace function app_private.send_exchange_purge_warning(exchange_id bigint) returns boolean
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
    'exchange:' || v_exchange.id || ':purge_warning:' || floor(extract(epoch from v_exchange.completed_at) * 1000)::bigint);
  return true;
end;
$$;
comment on function app_private.send_exchange_purge_warning(bigint) is E'Warns the organiser, once per completion of an exchange, that it will be purged; only 23 or more days after completion. Returns whether it warned.';
