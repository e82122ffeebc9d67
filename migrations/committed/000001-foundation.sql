--! Previous: -
--! Hash: sha1:8b69aada38439afb3d30f5779ca08d24bc15cada
--! Message: foundation

-- Foundation. Why: every module after this one needs the same base — three schemas with
-- distinct exposure, an identity for the request (sessions -> current_user_id()), one way to
-- enqueue jobs that honours each task's declared defaults, and a durable history of every job
-- run (graphile-worker deletes a job when it succeeds and keeps no record of its runs).
-- Roles are created by the migration runner (src/db/roles.ts) before this runs.

drop schema if exists app_public cascade;
drop schema if exists app_hidden cascade;
drop schema if exists app_private cascade;

-- Nothing is usable by PUBLIC unless granted here.
revoke all on schema public from public;
alter default privileges revoke all on sequences from public;
alter default privileges revoke all on functions from public;

-- pgcrypto is a trusted extension (PG13+): the database owner may install it. Used for
-- gen_random_bytes() wherever SQL mints a secret (session tokens).
create extension if not exists pgcrypto with schema public;

create schema app_public;
create schema app_hidden;
create schema app_private;
comment on schema app_public is E'Exposed through GraphQL. Row level security on every table.';
comment on schema app_hidden is E'Usable by the visitor role, not exposed through GraphQL.';
comment on schema app_private is E'Secrets and internals; the visitor role has no access.';

grant usage on schema public, app_public, app_hidden to :DATABASE_VISITOR;
alter default privileges in schema app_public, app_hidden grant usage, select on sequences to :DATABASE_VISITOR;
alter default privileges in schema app_public, app_hidden grant execute on functions to :DATABASE_VISITOR;

--------------------------------------------------------------------------------------------
-- Shared trigger functions

create function app_private.tg__timestamps() returns trigger
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  new.created_at = case when tg_op = 'INSERT' then now() else old.created_at end;
  new.updated_at = case when tg_op = 'UPDATE' and old.updated_at >= now() then old.updated_at + interval '1 millisecond' else now() end;
  return new;
end;
$$;
comment on function app_private.tg__timestamps() is E'Keeps created_at fixed and updated_at moving forward on every write path.';

--------------------------------------------------------------------------------------------
-- Users and sessions (the login flow that creates them comes with the accounts module)

create table app_public.users (
  id bigint primary key generated always as identity,
  email text not null check (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' and length(email) <= 320),
  name text check (length(name) <= 200),
  is_admin boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index users_email_key on app_public.users (lower(email));
alter table app_public.users enable row level security;
create trigger _100_timestamps before insert or update on app_public.users
  for each row execute procedure app_private.tg__timestamps();
comment on table app_public.users is E'A person who signs in. Admin rights are data (is_admin), checked in SQL.';
comment on column app_public.users.email is E'Sign-in address; unique regardless of case. Visible to the user and to admins only.';
comment on column app_public.users.name is E'Display name, at most 200 characters.';
comment on column app_public.users.is_admin is E'Platform administrator: may use the job control plane.';

create table app_private.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id bigint not null references app_public.users (id) on delete cascade,
  token_hash bytea not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null
);
create index sessions_user_id_idx on app_private.sessions (user_id);
create index sessions_expires_at_idx on app_private.sessions (expires_at);
comment on table app_private.sessions is E'Signed-in sessions. Only the SHA-256 of the bearer token is stored.';

create function app_hidden.session_id_for_token(token text) returns uuid
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select s.id
  from app_private.sessions s
  where s.token_hash = sha256(convert_to(token, 'UTF8'))
    and s.expires_at > now();
$$;
revoke all on function app_hidden.session_id_for_token(text) from public, :DATABASE_VISITOR;
grant usage on schema app_hidden to :DATABASE_AUTHENTICATOR;
grant execute on function app_hidden.session_id_for_token(text) to :DATABASE_AUTHENTICATOR;
comment on function app_hidden.session_id_for_token(text) is E'The live session a bearer token belongs to, or null. Called by the API before a request runs.';

create function app_private.create_session(user_id bigint, lifetime interval default interval '30 days') returns text
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_token text := translate(encode(public.gen_random_bytes(32), 'base64'), '+/=', '-_');
begin
  insert into app_private.sessions (user_id, token_hash, expires_at)
  values (create_session.user_id, sha256(convert_to(v_token, 'UTF8')), now() + lifetime);
  return v_token;
end;
$$;
comment on function app_private.create_session(bigint, interval) is E'Starts a session and returns its bearer token; the token is not stored and cannot be read again.';

create function app_public.current_session_id() returns uuid
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select nullif(pg_catalog.current_setting('hourglass.session_id', true), '')::uuid;
$$;
comment on function app_public.current_session_id() is E'The session of the current request (set by the API from the bearer token), or null.';

create function app_public.current_user_id() returns bigint
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select s.user_id
  from app_private.sessions s
  where s.id = app_public.current_session_id()
    and s.expires_at > now();
$$;
comment on function app_public.current_user_id() is E'The signed-in user of the current request, or null.';

create function app_hidden.current_user_is_admin() returns boolean
language sql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((select u.is_admin from app_public.users u where u.id = app_public.current_user_id()), false);
$$;
comment on function app_hidden.current_user_is_admin() is E'True when the signed-in user is a platform administrator.';

create function app_public.current_user() returns app_public.users
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select u.* from app_public.users u where u.id = app_public.current_user_id();
$$;
comment on function app_public.current_user() is E'The signed-in user, or null.';

create policy select_self on app_public.users for select using (id = app_public.current_user_id());
create policy select_as_admin on app_public.users for select using (app_hidden.current_user_is_admin());
create policy update_self on app_public.users for update using (id = app_public.current_user_id());
grant select on app_public.users to :DATABASE_VISITOR;
grant update (name) on app_public.users to :DATABASE_VISITOR;

--------------------------------------------------------------------------------------------
-- Task catalogue and enqueueing with per-task defaults

create table app_private.tasks (
  identifier text primary key,
  description text not null,
  priority smallint not null,
  max_attempts smallint not null check (max_attempts >= 1),
  time_limit_ms integer not null check (time_limit_ms > 0),
  synced_at timestamptz not null default now()
);
comment on table app_private.tasks is E'Every task in tasks/ with the defaults its file declares; written by the migration runner at start-up.';

create function app_private.add_jobs(specs graphile_worker.job_spec[], job_key_preserve_run_at boolean default false)
returns setof bigint
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
begin
  select s.identifier into v_unknown
  from unnest(specs) s
  where not exists (select 1 from app_private.tasks t where t.identifier = s.identifier)
  limit 1;
  if v_unknown is not null then
    raise exception 'Unknown task %', v_unknown using errcode = 'TASKU';
  end if;
  return query
    select j.id
    from graphile_worker.add_jobs(
      array(
        select row(
          s.identifier, s.payload, s.queue_name, s.run_at,
          coalesce(s.max_attempts, t.max_attempts), s.job_key,
          coalesce(s.priority, t.priority), s.flags
        )::graphile_worker.job_spec
        from unnest(specs) s
        join app_private.tasks t on t.identifier = s.identifier
      ),
      job_key_preserve_run_at
    ) j;
end;
$$;
comment on function app_private.add_jobs(graphile_worker.job_spec[], boolean) is
  E'Enqueues jobs like graphile_worker.add_jobs, filling priority and max_attempts from each task''s declared defaults where the spec leaves them null. Unknown task identifiers raise TASKU. Triggers call this once per statement.';

create function app_private.add_job(
  identifier text,
  payload json default '{}',
  run_at timestamptz default null,
  job_key text default null,
  queue_name text default null,
  priority integer default null,
  max_attempts integer default null
) returns bigint
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.add_jobs(array[
    row(identifier, coalesce(payload, '{}'::json), queue_name, run_at, max_attempts, job_key, priority, null)::graphile_worker.job_spec
  ]);
$$;
comment on function app_private.add_job(text, json, timestamptz, text, text, integer, integer) is
  E'Enqueues one job with the task''s declared defaults (see app_private.add_jobs). Returns the job id. A job_key replaces an earlier job with the same key.';

--------------------------------------------------------------------------------------------
-- Job history

create table app_public.job_runs (
  id uuid primary key,
  job_id bigint not null,
  task_identifier text not null,
  queue_name text,
  job_key text,
  attempt integer not null,
  max_attempts integer not null,
  payload jsonb,
  worker_id text not null,
  run_at timestamptz,
  started_at timestamptz not null,
  finished_at timestamptz,
  duration_ms double precision,
  outcome text not null check (outcome in ('running', 'succeeded', 'failed_retrying', 'failed_permanently', 'skipped', 'abandoned', 'timed_out')),
  error text,
  result jsonb,
  check ((outcome = 'running') = (finished_at is null))
);
alter table app_public.job_runs enable row level security;
-- Written at thousands of rows per second, so every index must earn its keep (measured with
-- npm run bench): per task over time; failures over time (a small partial index: most runs
-- succeed); and a BRIN over started_at — rows arrive in time order, so it is tiny and nearly free
-- to maintain, and it serves time ranges and retention.
create index job_runs_task_started_idx on app_public.job_runs (task_identifier, started_at desc);
create index job_runs_unsuccessful_idx on app_public.job_runs (outcome, started_at desc) where outcome <> 'succeeded';
create index job_runs_started_brin on app_public.job_runs using brin (started_at);
create policy select_as_admin on app_public.job_runs for select using (app_hidden.current_user_is_admin());
grant select on app_public.job_runs to :DATABASE_VISITOR;
comment on table app_public.job_runs is E'One row per execution of a job: when, where, how long and how it ended. Written by the workers in batches; visible to admins only. Pruned after JOB_HISTORY_RETENTION_DAYS.';
comment on column app_public.job_runs.job_id is E'graphile-worker job id; several runs (attempts) share it.';
comment on column app_public.job_runs.job_key is E'The job''s key, e.g. offers:42:expire; filter by prefix to find the jobs of one record.';
comment on column app_public.job_runs.attempt is E'Which attempt this run was (1 for the first).';
comment on column app_public.job_runs.payload is E'The job payload with secret-looking keys (token, secret, password, ...) redacted.';
comment on column app_public.job_runs.worker_id is E'The worker process (host:pid) that ran it.';
comment on column app_public.job_runs.run_at is E'When the job was due; started_at - run_at is its lateness.';
comment on column app_public.job_runs.outcome is E'running, succeeded, failed_retrying (will run again), failed_permanently (out of attempts or invalid), skipped (nothing to do), abandoned (its worker stopped), timed_out (exceeded the task''s time limit).';
comment on column app_public.job_runs.duration_ms is E'How long the run took, in milliseconds (null while running).';
comment on column app_public.job_runs.error is E'The error message of a failed run.';
comment on column app_public.job_runs.result is E'What the task reported, e.g. {"deleted": 120, "remaining": 0} for a sweep.';

create function app_private.prune_job_runs(older_than timestamptz, batch_size integer) returns integer
language sql volatile
set search_path to pg_catalog, public, pg_temp
as $$
  -- No ORDER BY: every row before the cutoff goes, and rows arrive in time order, so the BRIN
  -- bitmap scan meets the oldest pages first and stops after batch_size rows.
  with deleted as (
    delete from app_public.job_runs r
    where r.ctid = any (array(
      select d.ctid from app_public.job_runs d where d.started_at < older_than limit batch_size
    ))
    returning 1
  )
  select count(*)::integer from deleted;
$$;
comment on function app_private.prune_job_runs(timestamptz, integer) is E'Deletes up to batch_size history rows that started before older_than; returns how many. Call repeatedly (each call its own transaction) until it returns less than batch_size.';
