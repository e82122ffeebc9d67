--! Previous: sha1:cad26862e2c23a242e39306477d945ed8e4aa0a7
--! Hash: sha1:fda65608e5c6b802a59db2a4aad9d49797c8b3d7
--! Message: login links

-- Passwordless login. Why: every module needs signed-in users; magic links avoid storing
-- passwords. A link request enqueues users__send_login_link in the same transaction; the task
-- mints the token (only its SHA-256 is stored, so neither the job payload, the history nor the
-- database ever holds the raw token). Requests are rate-limited per address and per client.

drop function if exists app_public.logout();
drop function if exists app_public.login(text);
drop function if exists app_public.request_login_link(text);
drop function if exists app_private.check_rate_limit(text, integer, interval);
drop table if exists app_private.magic_tokens;
drop table if exists app_private.rate_limits;

create table app_private.rate_limits (
  key text primary key,
  count integer not null,
  expires_at timestamptz not null
);
create index rate_limits_expires_at_idx on app_private.rate_limits (expires_at);
comment on table app_private.rate_limits is E'Fixed-window counters, e.g. login_link:address:ada@example.com. An expired row counts as absent and is swept daily.';

create function app_private.check_rate_limit(key text, max_count integer, time_window interval) returns void
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
  v_expires timestamptz;
begin
  insert into app_private.rate_limits as r (key, count, expires_at)
  values (check_rate_limit.key, 1, now() + time_window)
  on conflict on constraint rate_limits_pkey do update set
    count = case when r.expires_at <= now() then 1 else r.count + 1 end,
    expires_at = case when r.expires_at <= now() then now() + time_window else r.expires_at end
  returning r.count, r.expires_at into v_count, v_expires;
  if v_count > max_count then
    raise exception 'Too many requests; try again after %', to_char(v_expires at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
      using errcode = 'RATEL';
  end if;
end;
$$;
comment on function app_private.check_rate_limit(text, integer, interval) is E'Counts one request against key; raises RATEL (with the time the window ends) beyond max_count per time_window.';

create table app_private.magic_tokens (
  id bigint primary key generated always as identity,
  user_id bigint not null references app_public.users (id) on delete cascade,
  token_hash bytea not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index magic_tokens_user_id_idx on app_private.magic_tokens (user_id) where used_at is null;
create index magic_tokens_expires_at_idx on app_private.magic_tokens (expires_at);
create index magic_tokens_used_at_idx on app_private.magic_tokens (used_at) where used_at is not null;
comment on table app_private.magic_tokens is E'Login link tokens: SHA-256 only, 15 minutes, single use. Minted by the users__send_login_link task.';

create function app_public.request_login_link(email text) returns boolean
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email text := lower(trim(request_login_link.email));
  v_user_id bigint;
  v_client text := nullif(pg_catalog.current_setting('hourglass.client_address', true), '');
begin
  if v_email is null or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' or length(v_email) > 320 then
    raise exception 'Not a valid email address' using errcode = 'EMAIL';
  end if;
  perform app_private.check_rate_limit('login_link:address:' || v_email, 5, interval '15 minutes');
  if v_client is not null then
    perform app_private.check_rate_limit('login_link:client:' || v_client, 5, interval '15 minutes');
  end if;
  insert into app_public.users (email) values (v_email) on conflict ((lower(email))) do nothing;
  select u.id into v_user_id from app_public.users u where lower(u.email) = v_email;
  perform app_private.add_job('users__send_login_link', json_build_object('userId', v_user_id),
    job_key := 'users:' || v_user_id || ':login_link');
  return true;
end;
$$;
comment on function app_public.request_login_link(text) is E'Emails a sign-in link to the address (creating the account on first use). Answers the same whether or not the address had an account. At most 5 requests per 15 minutes per address and per client (error RATEL).';

create function app_public.login(token text) returns text
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id bigint;
  v_lifetime interval := coalesce(nullif(pg_catalog.current_setting('hourglass.session_lifetime', true), '')::interval, interval '30 days');
begin
  update app_private.magic_tokens t set used_at = now()
  where t.token_hash = sha256(convert_to(login.token, 'UTF8')) and t.used_at is null and t.expires_at > now()
  returning t.user_id into v_user_id;
  if v_user_id is null then
    raise exception 'This sign-in link is invalid, used or expired' using errcode = 'LOGIN';
  end if;
  return app_private.create_session(v_user_id, v_lifetime);
end;
$$;
comment on function app_public.login(text) is E'Signs in with the token from a login link (single use, 15 minutes) and returns a session token for the Authorization: Bearer header. Shown once; only its hash is stored. Error LOGIN if the link is invalid, used or expired.';

create function app_public.logout() returns boolean
language sql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
  with ended as (delete from app_private.sessions s where s.id = app_public.current_session_id() returning 1)
  select exists (select 1 from ended);
$$;
comment on function app_public.logout() is E'Ends the current session. True if there was one.';
