--! Previous: sha1:82c7fbeb51c8e46414b0ebbc4b1bb49d34788bb5
--! Hash: sha1:6dd2d903719a9ab79ddb54834d3cba9336dbfe86
--! Message: rls once per query, key prefix lookup

-- Row level security that costs once per query, not once per row; and a key-prefix lookup of the
-- history that uses its index. Why (measured by npm run bench, section 8, with a million history
-- rows): app_hidden.current_user_is_admin() and app_public.current_user_id() are security definer
-- functions, so PostgreSQL cannot inline them and a policy calling them ran them for every row it
-- looked at (~60 us each): a 24-hour aggregate of job_runs took 2 s instead of 25-40 ms. Written
-- as a scalar subquery, `(select app_hidden.current_user_is_admin())`, the call becomes an
-- InitPlan evaluated once per query. Every policy in app_public is rewritten that way here; new
-- policies should be written so (see README "Writing migrations").
--
-- Separately, a `startsWith` filter is a LIKE, which PostgreSQL does not let run before a row
-- level security check, so under RLS it can never use job_runs_key_started_idx: "the runs of
-- offer 42" scanned the whole history (80 s with the old policy). job_runs_by_key_prefix checks
-- for an admin once and looks the prefix up through the index.

do $$
declare
  p record;
  v_calls constant text := 'app_(hidden|public)\.(current_user_is_admin|current_user_id)\(\)';
  v_using text;
  v_check text;
begin
  for p in
    select * from pg_policies
    where schemaname in ('app_public', 'app_private')
      and coalesce(qual, '') || coalesce(with_check, '') ~ v_calls
      -- Already rewritten (this block is safe to run again).
      and coalesce(qual, '') || coalesce(with_check, '') !~ ('SELECT ' || v_calls)
  loop
    v_using := regexp_replace(p.qual, v_calls, '(select app_\1.\2())', 'g');
    v_check := regexp_replace(p.with_check, v_calls, '(select app_\1.\2())', 'g');
    execute format('alter policy %I on %I.%I', p.policyname, p.schemaname, p.tablename)
      || coalesce(' using (' || v_using || ')', '') || coalesce(' with check (' || v_check || ')', '');
  end loop;
end;
$$;

drop function if exists app_public.job_runs_by_key_prefix(text);

create function app_public.job_runs_by_key_prefix(prefix text) returns setof app_public.job_runs
language plpgsql stable security definer
set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.require_admin();
  if coalesce(prefix, '') = '' then
    raise exception 'A key prefix is required, e.g. offers:42:' using errcode = 'JBKEY';
  end if;
  -- The prefix as a literal, so the planner turns starts_with into a range of the key index.
  return query execute format('select * from app_public.job_runs where starts_with(job_key, %L) order by started_at desc', prefix);
end;
$$;
comment on function app_public.job_runs_by_key_prefix(text) is E'Admins: the history of the jobs whose key starts with prefix (e.g. offers:42: for everything about offer 42), newest first, through the key index.';
