--! Previous: sha1:6ac03de53200b6893d083d68fc76405cf1cd0f7b
--! Hash: sha1:4ed12741f476ec9d003ff3e6cdaca51bb8c2b637
--! Message: expiring uploads

-- Expiring uploads. Why: the source system stored uploads with a 24-hour TTL, deleted them every 6
-- hours (1,000 at a time, tolerating files already gone) and sent hourly `file.expiring` notices
-- kept unique by an idempotency constraint. Here the row is written by the API after the file is
-- on disk (and the file removed if the row cannot be written); the sweeps are crontab jobs; the
-- notice is a webhook event whose idempotency key is the file, so it goes out once.

drop function if exists app_private.sweep_expiring_uploads(integer, interval);
drop function if exists app_private.forget_uploads(bigint[]);
drop function if exists app_private.expired_uploads(integer);
drop function if exists app_hidden.record_upload(text, text, bigint, text, interval);
drop table if exists app_public.upload_files cascade;

create table app_public.upload_files (
  id bigint primary key generated always as identity,
  owner_id bigint not null references app_public.users (id) on delete cascade,
  storage_key text not null unique check (storage_key ~ '^[0-9a-f-]{36}$'),
  name text not null check (length(name) between 1 and 255),
  size bigint not null check (size >= 0),
  content_type text not null check (length(content_type) <= 255),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  expiring_notified_at timestamptz,
  check (expires_at > created_at)
);
create index upload_files_owner_id_idx on app_public.upload_files (owner_id);
create index upload_files_expires_at_idx on app_public.upload_files (expires_at);
create index upload_files_not_notified_idx on app_public.upload_files (expires_at) where expiring_notified_at is null;
alter table app_public.upload_files enable row level security;
create policy select_own on app_public.upload_files for select using (owner_id = app_public.current_user_id());
create policy select_as_admin on app_public.upload_files for select using (app_hidden.current_user_is_admin());
grant select on app_public.upload_files to :DATABASE_VISITOR;
comment on table app_public.upload_files is E'Files uploaded with POST /uploads. Each expires FILE_UPLOAD_TTL_HOURS (24) after upload: its owner gets a file.expiring webhook event within FILE_EXPIRING_WINDOW_HOURS of that, and the file and row are deleted by the 6-hourly cleanup.';
comment on column app_public.upload_files.storage_key is E'The file''s name on disk, under DATA_DIR/uploads.';

create function app_hidden.record_upload(storage_key text, name text, size bigint, content_type text, ttl interval)
returns app_public.upload_files
language plpgsql volatile security definer
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_file app_public.upload_files;
begin
  if app_public.current_user_id() is null then
    raise exception 'Sign in to upload' using errcode = 'UPPRM';
  end if;
  insert into app_public.upload_files (owner_id, storage_key, name, size, content_type, expires_at)
  values (app_public.current_user_id(), storage_key, left(coalesce(nullif(btrim(name), ''), 'upload'), 255), size,
          left(coalesce(content_type, 'application/octet-stream'), 255), now() + ttl)
  returning * into v_file;
  return v_file;
end;
$$;
comment on function app_hidden.record_upload(text, text, bigint, text, interval) is E'Called by the API once an uploaded file is stored: records it for the signed-in user, expiring after ttl.';

create function app_private.expired_uploads(batch_size integer) returns table (id bigint, storage_key text)
language sql stable
set search_path to pg_catalog, public, pg_temp
as $$
  select f.id, f.storage_key from app_public.upload_files f where f.expires_at <= now() order by f.expires_at limit batch_size;
$$;
comment on function app_private.expired_uploads(integer) is E'Up to batch_size expired uploads, oldest first: the cleanup deletes their files, then their rows.';

create function app_private.forget_uploads(ids bigint[], out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  with gone as (
    delete from app_public.upload_files f where f.id = any (ids) and f.expires_at <= now() returning 1
  )
  select count(*) into deleted from gone;
  select count(*) into remaining from app_public.upload_files f where f.expires_at <= now();
end;
$$;
comment on function app_private.forget_uploads(bigint[]) is E'Deletes the rows of expired uploads whose files are gone; returns how many, and how many expired rows remain.';

create function app_private.sweep_expiring_uploads(batch_size integer, expiring_within interval, out notified integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_deliveries integer;
begin
  with due as (
    update app_public.upload_files f set expiring_notified_at = now()
    where f.id = any (array(
      select u.id from app_public.upload_files u
      where u.expiring_notified_at is null and u.expires_at > now() and u.expires_at <= now() + expiring_within
      order by u.expires_at limit batch_size for update skip locked))
    returning f.id, f.owner_id, f.name, f.expires_at
  )
  select count(*), app_private.emit_events('file.expiring',
           array_agg(jsonb_build_object('fileId', d.id, 'name', d.name, 'expiresAt', d.expires_at)),
           array_agg('file.expiring:' || d.id),
           array_agg(jsonb_build_array(d.owner_id)))
  into notified, v_deliveries
  from due d;
  remaining := case when notified < batch_size then 0 else (
    select count(*) from app_public.upload_files u
    where u.expiring_notified_at is null and u.expires_at > now() and u.expires_at <= now() + expiring_within) end;
end;
$$;
comment on function app_private.sweep_expiring_uploads(integer, interval) is E'Emits one file.expiring event per upload that expires within expiring_within and was not yet notified (the event''s idempotency key is the file). Returns how many, and how many remain.';
