--! Previous: sha1:7368d34d7b0f9f226799b2e9c2e4cb9f92fb6ff8
--! Hash: sha1:6ac03de53200b6893d083d68fc76405cf1cd0f7b
--! Message: webhook outbox

-- Webhook outbox. Why: the source system wrote outbox events and delivered them from an
-- on_commit hook plus a sweep, so a crash between commit and hook lost the fast path, and a hook
-- that ran before commit could deliver an event that was then rolled back. Here a domain change,
-- its event, one delivery row per subscribed endpoint and each delivery's job commit together (or
-- not at all); the delivery job signs and sends (src/webhooks), records every attempt, and
-- schedules its own retry; a sweep every 5 minutes re-finds pending deliveries without a job.
-- Events go only to endpoints whose owner may see the subject (the event's audience) or admins.

drop function if exists app_private.sweep_outbox_events(integer, interval);
drop function if exists app_private.sweep_stranded_deliveries(integer);
drop function if exists app_private.record_webhook_attempt(bigint, integer, integer, text, double precision, integer);
drop function if exists app_private.webhook_delivery_request(bigint);
drop function if exists app_public.replay_event(bigint);
drop function if exists app_public.rotate_webhook_secret(bigint, integer);
drop function if exists app_public.create_webhook_endpoint(text, text[]);
drop trigger if exists _900_emit_events on app_public.exchange_purges;
drop trigger if exists _900_emit_events on app_public.exchanges;
drop trigger if exists _900_emit_events_on_insert on app_public.offers;
drop trigger if exists _900_emit_events on app_public.offers;
drop function if exists app_private.tg_exchange_purges__emit_events();
drop function if exists app_private.tg_exchanges__emit_events();
drop function if exists app_private.tg_offers__emit_events();
drop function if exists app_private.emit_events(text, jsonb[], text[], jsonb[]);
drop function if exists app_private.new_webhook_secret();
drop type if exists app_public.webhook_endpoint_secret;
drop table if exists app_public.webhook_attempts cascade;
drop table if exists app_public.webhook_deliveries cascade;
drop table if exists app_public.outbox_events cascade;
drop table if exists app_private.webhook_secrets cascade;
drop table if exists app_public.webhook_endpoints cascade;
drop function if exists app_private.webhook_topics();

create function app_private.webhook_topics() returns text[]
language sql immutable
set search_path to pg_catalog, public, pg_temp
as $$
  select array['offer.sent', 'offer.accepted', 'offer.rejected', 'offer.withdrawn', 'offer.expired',
               'exchange.matched', 'exchange.completed', 'exchange.purged', 'file.expiring'];
$$;
comment on function app_private.webhook_topics() is E'Every topic an endpoint may subscribe to.';

create table app_public.webhook_endpoints (
  id bigint primary key generated always as identity,
  owner_id bigint not null default app_public.current_user_id() references app_public.users (id) on delete cascade,
  url text not null check (url ~ '^https?://[^\s]+$' and length(url) <= 2000),
  topics text[] not null check (cardinality(topics) > 0 and topics <@ app_private.webhook_topics()),
  active boolean not null default true,
  disabled_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index webhook_endpoints_owner_id_idx on app_public.webhook_endpoints (owner_id);
create index webhook_endpoints_topics_idx on app_public.webhook_endpoints using gin (topics) where active;
create trigger _100_timestamps before insert or update on app_public.webhook_endpoints
  for each row execute procedure app_private.tg__timestamps();
alter table app_public.webhook_endpoints enable row level security;
create policy manage_own on app_public.webhook_endpoints for all
  using (owner_id = app_public.current_user_id()) with check (owner_id = app_public.current_user_id());
create policy select_as_admin on app_public.webhook_endpoints for select using (app_hidden.current_user_is_admin());
grant select, delete on app_public.webhook_endpoints to :DATABASE_VISITOR;
grant update (url, topics, active) on app_public.webhook_endpoints to :DATABASE_VISITOR;
comment on table app_public.webhook_endpoints is E'Where a user wants events POSTed: url, topics, active. Created with createWebhookEndpoint (which shows the signing secret once); an endpoint that answers 410 Gone is deactivated with disabled_reason. Delivery refuses private, loopback and link-local addresses at connect time.';
comment on column app_public.webhook_endpoints.topics is E'Topics to receive: offer.sent, offer.accepted, offer.rejected, offer.withdrawn, offer.expired, exchange.matched, exchange.completed, exchange.purged, file.expiring.';

create table app_private.webhook_secrets (
  id bigint primary key generated always as identity,
  endpoint_id bigint not null references app_public.webhook_endpoints (id) on delete cascade,
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+=*$'),
  created_at timestamptz not null default now(),
  expires_at timestamptz
);
create index webhook_secrets_endpoint_id_idx on app_private.webhook_secrets (endpoint_id);
comment on table app_private.webhook_secrets is E'Signing secrets (Standard Webhooks: whsec_ + base64 of 32 random bytes). During a rotation the old secret signs too until its expires_at.';

create type app_public.webhook_endpoint_secret as (endpoint_id bigint, secret text);
comment on type app_public.webhook_endpoint_secret is E'An endpoint and its signing secret, shown once.';

create table app_public.outbox_events (
  id bigint primary key generated always as identity,
  topic text not null,
  payload jsonb not null,
  idempotency_key text not null unique,
  audience bigint[] not null default '{}',
  created_at timestamptz not null default now()
);
create index outbox_events_created_at_idx on app_public.outbox_events (created_at);
alter table app_public.outbox_events enable row level security;
create policy select_as_audience on app_public.outbox_events for select using (app_public.current_user_id() = any (audience));
create policy select_as_admin on app_public.outbox_events for select using (app_hidden.current_user_is_admin());
grant select on app_public.outbox_events to :DATABASE_VISITOR;
comment on table app_public.outbox_events is E'Domain events, written in the same transaction as the change (only when some active endpoint subscribes to the topic). audience: the users entitled to receive it. Cleaned OUTBOX_RETENTION_HOURS after all its deliveries ended.';
comment on column app_public.outbox_events.payload is E'Ids and states only, e.g. {"offerId": 42, "status": "ACCEPTED"}.';

create table app_public.webhook_deliveries (
  id bigint primary key generated always as identity,
  event_id bigint not null references app_public.outbox_events (id) on delete cascade,
  endpoint_id bigint not null references app_public.webhook_endpoints (id) on delete cascade,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0,
  next_attempt_at timestamptz,
  last_status_code integer,
  last_error text,
  response_time_ms double precision,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (event_id, endpoint_id)
);
create index webhook_deliveries_endpoint_id_idx on app_public.webhook_deliveries (endpoint_id);
create index webhook_deliveries_pending_idx on app_public.webhook_deliveries (next_attempt_at) where status = 'pending';
create trigger _100_timestamps before insert or update on app_public.webhook_deliveries
  for each row execute procedure app_private.tg__timestamps();
alter table app_public.webhook_deliveries enable row level security;
create policy select_own on app_public.webhook_deliveries for select using (
  endpoint_id in (select e.id from app_public.webhook_endpoints e where e.owner_id = app_public.current_user_id()));
create policy select_as_admin on app_public.webhook_deliveries for select using (app_hidden.current_user_is_admin());
grant select on app_public.webhook_deliveries to :DATABASE_VISITOR;
comment on table app_public.webhook_deliveries is E'One event to one endpoint: pending (with next_attempt_at), delivered, or failed after its retries (replayable with replayEvent).';

create table app_public.webhook_attempts (
  id bigint primary key generated always as identity,
  delivery_id bigint not null references app_public.webhook_deliveries (id) on delete cascade,
  attempt integer not null,
  status_code integer,
  error text,
  duration_ms double precision not null,
  created_at timestamptz not null default now()
);
create index webhook_attempts_delivery_id_idx on app_public.webhook_attempts (delivery_id);
alter table app_public.webhook_attempts enable row level security;
create policy select_own on app_public.webhook_attempts for select using (
  delivery_id in (select d.id from app_public.webhook_deliveries d));
grant select on app_public.webhook_attempts to :DATABASE_VISITOR;
comment on table app_public.webhook_attempts is E'Every attempt at a delivery: HTTP status or error, and how long it took.';

--------------------------------------------------------------------------------------------
-- Endpoints and secrets

create function app_private.new_webhook_secret() returns text
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  select 'whsec_' || encode(public.gen_random_bytes(32), 'base64');
$$;

create function app_public.create_webhook_endpoint(url text, topics text[]) returns app_public.webhook_endpoint_secret
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id bigint;
  v_secret text := app_private.new_webhook_secret();
begin
  if app_public.current_user_id() is null then
    raise exception 'Sign in to add a webhook endpoint' using errcode = 'WHPRM';
  end if;
  if url is null or url !~ '^https?://[^\s]+$' or length(url) > 2000 then
    raise exception 'The URL must be http:// or https:// (at most 2000 characters)' using errcode = 'WHURL';
  end if;
  if coalesce(cardinality(topics), 0) = 0 or not topics <@ app_private.webhook_topics() then
    raise exception 'Topics must be some of: %', array_to_string(app_private.webhook_topics(), ', ') using errcode = 'WHTOP';
  end if;
  insert into app_public.webhook_endpoints (owner_id, url, topics) values (app_public.current_user_id(), url, topics)
  returning id into v_id;
  insert into app_private.webhook_secrets (endpoint_id, secret) values (v_id, v_secret);
  return row(v_id, v_secret)::app_public.webhook_endpoint_secret;
end;
$$;
comment on function app_public.create_webhook_endpoint(text, text[]) is E'Adds an endpoint for the signed-in user and returns its signing secret: this is the only time it is shown.';

create function app_public.rotate_webhook_secret(endpoint_id bigint, overlap_hours integer default 24) returns app_public.webhook_endpoint_secret
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_secret text := app_private.new_webhook_secret();
begin
  if not exists (select 1 from app_public.webhook_endpoints e where e.id = endpoint_id and e.owner_id = app_public.current_user_id()) then
    raise exception 'Webhook endpoint % not found', endpoint_id using errcode = 'WHNFD';
  end if;
  if overlap_hours is null or overlap_hours not between 0 and 168 then
    raise exception 'The overlap must be 0 to 168 hours' using errcode = 'WHOVL';
  end if;
  update app_private.webhook_secrets s set expires_at = least(coalesce(s.expires_at, 'infinity'), now() + make_interval(hours => overlap_hours))
  where s.endpoint_id = rotate_webhook_secret.endpoint_id;
  insert into app_private.webhook_secrets (endpoint_id, secret) values (endpoint_id, v_secret);
  return row(endpoint_id, v_secret)::app_public.webhook_endpoint_secret;
end;
$$;
comment on function app_public.rotate_webhook_secret(bigint, integer) is E'Issues a new signing secret (shown once). The old one keeps signing alongside it for overlap_hours (default 24), so receivers can switch without losing messages.';

--------------------------------------------------------------------------------------------
-- Emitting events: one call per statement

create function app_private.emit_events(topic text, payloads jsonb[], keys text[], audiences jsonb[]) returns integer
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  -- Nothing is written for a topic nobody can receive (checked once per statement).
  if coalesce(cardinality(payloads), 0) = 0
     or not exists (select 1 from app_public.webhook_endpoints e where e.active and e.topics @> array[emit_events.topic]) then
    return 0;
  end if;
  with events as (
    insert into app_public.outbox_events (topic, payload, idempotency_key, audience)
    select emit_events.topic, u.payload, u.key,
           array(select jsonb_array_elements_text(coalesce(u.audience, '[]'))::bigint)
    from unnest(payloads, keys, audiences) as u(payload, key, audience)
    on conflict (idempotency_key) do nothing
    returning id, audience
  ),
  deliveries as (
    insert into app_public.webhook_deliveries (event_id, endpoint_id, next_attempt_at)
    select ev.id, e.id, now()
    from events ev
    join app_public.webhook_endpoints e on e.active and e.topics @> array[emit_events.topic]
    join app_public.users u on u.id = e.owner_id
    where e.owner_id = any (ev.audience) or u.is_admin
    returning id
  )
  select app_private.schedule_jobs('webhooks__deliver',
    array_agg(json_build_object('deliveryId', d.id)), array_agg(null::timestamptz), array_agg('webhook_deliveries:' || d.id || ':deliver'))
  into v_count
  from deliveries d;
  return coalesce(v_count, 0);
end;
$$;
comment on function app_private.emit_events(text, jsonb[], text[], jsonb[]) is E'Writes events of one topic (payloads[i] with idempotency key keys[i], receivable by the users in the JSON array audiences[i]), a delivery for each active subscribed endpoint whose owner is in the audience (or is an admin), and each delivery''s webhooks__deliver job, in the caller''s transaction. A key seen before writes nothing. Returns how many deliveries were enqueued.';

-- Offers: sent, accepted, rejected, withdrawn, expired. The audience: the company's members and
-- the worker's user.
create function app_private.tg_offers__emit_events() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_topic text;
  -- An insert has no old rows: every inserted status is a change.
  v_old text := case when tg_op = 'INSERT' then '(select null::bigint as id, null::text as status)' else 'old_rows' end;
begin
  foreach v_topic in array array['offer.sent', 'offer.accepted', 'offer.rejected', 'offer.withdrawn', 'offer.expired'] loop
    if exists (select 1 from app_public.webhook_endpoints e where e.active and e.topics @> array[v_topic]) then
      execute format($sql$
        select app_private.emit_events($1,
          array_agg(jsonb_build_object('offerId', n.id, 'status', n.status, 'companyId', n.company_id, 'workerId', n.worker_id)),
          array_agg($1 || ':' || n.id || ':' || extract(epoch from n.updated_at)::text),
          array_agg(to_jsonb(array(
            select m.user_id from app_public.company_members m where m.company_id = n.company_id
            union select w.user_id from app_public.workers w where w.id = n.worker_id and w.user_id is not null))))
        from new_rows n left join %s o on o.id = n.id
        where n.status = upper(split_part($1, '.', 2)) and o.status is distinct from n.status
      $sql$, v_old) using v_topic;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_offers__emit_events() is E'After an offer statement: the offer.* webhook events for offers whose status changed, when any endpoint subscribes.';
create trigger _900_emit_events after update on app_public.offers
  referencing old table as old_rows new table as new_rows
  for each statement execute procedure app_private.tg_offers__emit_events();
create trigger _900_emit_events_on_insert after insert on app_public.offers
  referencing new table as new_rows
  for each statement execute procedure app_private.tg_offers__emit_events();

-- Exchanges: matched and completed (audience: the organiser); purged, from the purge log.
create function app_private.tg_exchanges__emit_events() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_topic text;
begin
  foreach v_topic in array array['exchange.matched', 'exchange.completed'] loop
    if exists (select 1 from app_public.webhook_endpoints e where e.active and e.topics @> array[v_topic]) then
      execute $sql$
        select app_private.emit_events($1,
          array_agg(jsonb_build_object('exchangeId', n.id, 'state', n.state)),
          array_agg($1 || ':' || n.id || ':' || extract(epoch from n.updated_at)::text),
          array_agg(jsonb_build_array(n.organiser_id)))
        from new_rows n join old_rows o on o.id = n.id
        where n.state = upper(split_part($1, '.', 2)) and o.state <> n.state
      $sql$ using v_topic;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_exchanges__emit_events() is E'After an exchange update statement: exchange.matched and exchange.completed webhook events, when any endpoint subscribes.';
create trigger _900_emit_events after update on app_public.exchanges
  referencing old table as old_rows new table as new_rows
  for each statement execute procedure app_private.tg_exchanges__emit_events();

create function app_private.tg_exchange_purges__emit_events() returns trigger
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.emit_events('exchange.purged',
    array_agg(jsonb_build_object('exchangeId', n.exchange_id, 'participants', n.participants, 'matches', n.matches)),
    array_agg('exchange.purged:' || n.exchange_id),
    array_agg(jsonb_build_array(n.organiser_id)))
  from new_rows n;
  return null;
end;
$$;
comment on function app_private.tg_exchange_purges__emit_events() is E'After purge log rows are written: the exchange.purged webhook events.';
create trigger _900_emit_events after insert on app_public.exchange_purges
  referencing new table as new_rows
  for each statement execute procedure app_private.tg_exchange_purges__emit_events();

--------------------------------------------------------------------------------------------
-- Delivery: what to send, and the outcome of each attempt

create function app_private.webhook_delivery_request(delivery_id bigint)
returns table (status text, attempts integer, url text, message_id text, body text, secrets text[], endpoint_active boolean)
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  -- The body is built from stored values by PostgreSQL, so every retry sends the same bytes.
  select d.status, d.attempts, e.url, 'msg_' || ev.id,
         json_build_object('type', ev.topic, 'timestamp', to_char(ev.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                           'data', ev.payload)::text,
         array(select s.secret from app_private.webhook_secrets s
               where s.endpoint_id = e.id and (s.expires_at is null or s.expires_at > now()) order by s.id desc),
         e.active
  from app_public.webhook_deliveries d
  join app_public.outbox_events ev on ev.id = d.event_id
  join app_public.webhook_endpoints e on e.id = d.endpoint_id
  where d.id = delivery_id;
$$;
comment on function app_private.webhook_delivery_request(bigint) is E'For the delivery job: the delivery''s state, the endpoint URL, the message id (stable across retries), the body (identical bytes every time) and the signing secrets in force.';

create function app_private.record_webhook_attempt(
  delivery_id bigint, attempt integer, status_code integer, error text, duration_ms double precision, retry_after_seconds integer
) returns text
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- After the nth failed attempt the next one waits schedule[n]; after the last, the delivery fails.
  v_schedule interval[] := array['5 seconds', '5 minutes', '30 minutes', '2 hours', '5 hours', '10 hours', '10 hours']::interval[];
  v_delivery app_public.webhook_deliveries;
  v_outcome text;
  v_next timestamptz;
begin
  select * into v_delivery from app_public.webhook_deliveries d where d.id = delivery_id for update;
  if not found or v_delivery.status <> 'pending' then
    return 'gone';
  end if;
  insert into app_public.webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)
  values (delivery_id, attempt, status_code, left(error, 1000), duration_ms);
  if status_code between 200 and 299 then
    v_outcome := 'delivered';
  elsif status_code = 410 then
    v_outcome := 'failed';
    update app_public.webhook_endpoints e set active = false, disabled_reason = 'The endpoint answered 410 Gone'
    where e.id = v_delivery.endpoint_id;
  elsif attempt > cardinality(v_schedule) then
    v_outcome := 'failed';
  else
    v_outcome := 'retry';
    v_next := now() + case
      when status_code in (429, 503) and retry_after_seconds is not null
        then make_interval(secs => least(greatest(retry_after_seconds, 1), 86400))
      else v_schedule[attempt] end;
  end if;
  update app_public.webhook_deliveries d set
    status = case v_outcome when 'retry' then 'pending' else v_outcome end,
    attempts = attempt,
    next_attempt_at = v_next,
    last_status_code = status_code,
    last_error = left(error, 1000),
    response_time_ms = duration_ms,
    delivered_at = case when v_outcome = 'delivered' then now() end
  where d.id = delivery_id;
  if v_outcome = 'retry' then
    perform app_private.add_job('webhooks__deliver', json_build_object('deliveryId', delivery_id), run_at := v_next,
      job_key := 'webhook_deliveries:' || delivery_id || ':deliver');
  end if;
  return v_outcome;
end;
$$;
comment on function app_private.record_webhook_attempt(bigint, integer, integer, text, double precision, integer) is E'Records one attempt and decides: 2xx delivered; 410 failed and the endpoint disabled; otherwise (3xx included) a retry after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (429/503 wait Retry-After, capped at a day), then failed. A retry is enqueued in the same transaction. Returns delivered, retry, failed or gone.';

create function app_public.replay_event(event_id bigint) returns integer
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  with again as (
    update app_public.webhook_deliveries d set status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = null
    from app_public.webhook_endpoints e
    where d.event_id = replay_event.event_id and e.id = d.endpoint_id and e.active
      and (e.owner_id = app_public.current_user_id() or app_hidden.current_user_is_admin())
      and d.status <> 'pending'
    returning d.id
  )
  select count(app_private.add_job('webhooks__deliver', json_build_object('deliveryId', a.id),
           job_key := 'webhook_deliveries:' || a.id || ':deliver'))::integer
  into v_count from again a;
  if v_count = 0 then
    raise exception 'Event % has no finished delivery of yours to an active endpoint', event_id using errcode = 'WHNFD';
  end if;
  return v_count;
end;
$$;
comment on function app_public.replay_event(bigint) is E'Delivers an event again (same message id) to the signed-in user''s active endpoints whose delivery had finished (delivered or failed). Returns how many.';

--------------------------------------------------------------------------------------------
-- Sweeps

create function app_private.sweep_stranded_deliveries(batch_size integer, out requeued integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Pending, due for a minute, and no job: lost (a job deleted by hand, a restore).
  with stranded as (
    select d.id from app_public.webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now() - interval '1 minute'
      and not exists (select 1 from graphile_worker.jobs j where j.key = 'webhook_deliveries:' || d.id || ':deliver')
    order by d.next_attempt_at
    limit batch_size
  )
  select count(app_private.add_job('webhooks__deliver', json_build_object('deliveryId', s.id),
           job_key := 'webhook_deliveries:' || s.id || ':deliver'))::integer
  into requeued from stranded s;
  remaining := case when requeued < batch_size then 0 else (
    select count(*) from app_public.webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now() - interval '1 minute'
      and not exists (select 1 from graphile_worker.jobs j where j.key = 'webhook_deliveries:' || d.id || ':deliver')) end;
end;
$$;
comment on function app_private.sweep_stranded_deliveries(integer) is E'Re-enqueues up to batch_size pending deliveries that have been due for over a minute without a job. Returns how many.';

create function app_private.sweep_outbox_events(batch_size integer, older_than interval, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_public.outbox_events ev
    where ev.id = any (array(
      select e.id from app_public.outbox_events e
      where e.created_at < now() - older_than
        and not exists (select 1 from app_public.webhook_deliveries d where d.event_id = e.id and d.status = 'pending')
      order by e.created_at limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_public.outbox_events e
    where e.created_at < now() - older_than
      and not exists (select 1 from app_public.webhook_deliveries d where d.event_id = e.id and d.status = 'pending')) end;
end;
$$;
comment on function app_private.sweep_outbox_events(integer, interval) is E'Deletes up to batch_size events older than older_than whose deliveries have all ended (delivered or failed), with their deliveries and attempts. Returns how many, and how many remain.';
