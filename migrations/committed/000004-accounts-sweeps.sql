--! Previous: sha1:fda65608e5c6b802a59db2a4aad9d49797c8b3d7
--! Hash: sha1:6e6da6ed2034bb19ef964f8e282b8e21da790758
--! Message: accounts sweeps

-- Cleanup sweeps for accounts. Why: login tokens, sessions and rate-limit windows only ever grow;
-- the crontab sweeps them in bounded batches (each call one short transaction) that walk an index,
-- so a big backlog never holds long locks and a quiet table costs an index probe.

drop function if exists app_private.sweep_rate_limits(integer);
drop function if exists app_private.sweep_sessions(integer);
drop function if exists app_private.sweep_magic_tokens(integer);

create function app_private.sweep_magic_tokens(batch_size integer, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with doomed as (
    (select t.id from app_private.magic_tokens t where t.expires_at < now() limit batch_size)
    union
    (select t.id from app_private.magic_tokens t where t.used_at < now() - interval '24 hours' limit batch_size)
    limit batch_size
  ), gone as (
    delete from app_private.magic_tokens t using doomed where t.id = doomed.id returning 1
  )
  select count(*) into deleted from gone;
  -- Counting only when the batch was full: a sweep that finished has nothing left by definition.
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_private.magic_tokens t where t.expires_at < now() or t.used_at < now() - interval '24 hours') end;
end;
$$;
comment on function app_private.sweep_magic_tokens(integer) is E'Deletes up to batch_size login tokens that expired, or were used more than 24 hours ago. Returns how many, and how many remain eligible (0 unless the batch was full).';

create function app_private.sweep_sessions(batch_size integer, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_private.sessions s
    where s.id = any (array(select e.id from app_private.sessions e where e.expires_at < now() limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_private.sessions s where s.expires_at < now()) end;
end;
$$;
comment on function app_private.sweep_sessions(integer) is E'Deletes up to batch_size expired sessions. Returns how many, and how many remain eligible (0 unless the batch was full).';

create function app_private.sweep_rate_limits(batch_size integer, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_private.rate_limits r
    where r.key = any (array(select e.key from app_private.rate_limits e where e.expires_at < now() limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_private.rate_limits r where r.expires_at < now()) end;
end;
$$;
comment on function app_private.sweep_rate_limits(integer) is E'Deletes up to batch_size rate-limit windows that have ended. Returns how many, and how many remain eligible (0 unless the batch was full).';
