--! Previous: sha1:8b69aada38439afb3d30f5779ca08d24bc15cada
--! Hash: sha1:cad26862e2c23a242e39306477d945ed8e4aa0a7
--! Message: email log

-- Email log. Why: a job can run twice (a retry after a timeout, a duplicate enqueue, a worker that
-- died after sending); every email therefore goes through one row per (purpose, entity, recipient
-- [, period]) whose state moves pending -> sending -> sent | failed, so a message is sent at most
-- once. Addresses that hard-bounced (SMTP 5xx) are suppressed until a DBA clears them.

drop function if exists app_private.queue_email(text, text, text, jsonb);
drop table if exists app_private.email_suppressions;
drop table if exists app_private.email_deliveries;

create table app_private.email_deliveries (
  id bigint primary key generated always as identity,
  key text not null unique,
  template text not null,
  recipient text not null check (recipient ~ '^[^@\s]+@[^@\s]+$'),
  data jsonb not null default '{}',
  state text not null default 'pending' check (state in ('pending', 'sending', 'sent', 'failed')),
  attempts integer not null default 0,
  message_id text,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  sent_at timestamptz
);
create index email_deliveries_unfinished_idx on app_private.email_deliveries (updated_at) where state in ('pending', 'sending');
create trigger _100_timestamps before insert or update on app_private.email_deliveries
  for each row execute procedure app_private.tg__timestamps();
comment on table app_private.email_deliveries is E'One row per email Hourglass means to send, unique by key (purpose:entity:recipient[:period]). State pending -> sending -> sent | failed; a row that is sending or done is never sent again. data holds the template variables (never secrets).';

create table app_private.email_suppressions (
  address text primary key check (address = lower(address)),
  reason text not null,
  created_at timestamptz not null default now()
);
comment on table app_private.email_suppressions is E'Addresses that answered with a permanent SMTP failure (5xx). Nothing is sent to them until the row is deleted.';

create function app_private.queue_email(key text, template text, recipient text, data jsonb default '{}')
returns bigint
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id bigint;
begin
  if exists (select 1 from app_private.email_suppressions s where s.address = lower(queue_email.recipient)) then
    insert into app_private.email_deliveries (key, template, recipient, data, state, last_error)
    values (queue_email.key, queue_email.template, queue_email.recipient, coalesce(queue_email.data, '{}'), 'failed', 'address suppressed')
    on conflict on constraint email_deliveries_key_key do nothing;
    return null;
  end if;
  insert into app_private.email_deliveries (key, template, recipient, data)
  values (queue_email.key, queue_email.template, queue_email.recipient, coalesce(queue_email.data, '{}'))
  on conflict on constraint email_deliveries_key_key do nothing
  returning id into v_id;
  if v_id is not null then
    perform app_private.add_job('send_email', json_build_object('deliveryId', v_id), job_key := 'email_deliveries:' || v_id || ':send');
  end if;
  return v_id;
end;
$$;
comment on function app_private.queue_email(text, text, text, jsonb) is E'Records an email to send and enqueues its send_email job in the same transaction. A key seen before, or a suppressed recipient, sends nothing; returns the new delivery id or null.';
