--! Previous: sha1:25b85c6f8abbdc9ee0528b83c4bddfdfd6cdc915
--! Hash: sha1:d4a2e23c454aef0e26ebf1b67a95879aa5ce0e23
--! Message: job history sweep

-- Job history retention in the same shape as every other sweep. Why: prune_job_runs returned only
-- a count, so its task counted what remained in TypeScript, writing the retention rule twice and
-- running its own copy of the batch loop; sweep_job_runs returns {deleted, remaining} like the
-- others and is driven by the shared loop.

drop function if exists app_private.sweep_job_runs(integer, interval);
drop function if exists app_private.prune_job_runs(timestamptz, integer);

create function app_private.sweep_job_runs(batch_size integer, older_than interval, out deleted integer, out remaining bigint)
language plpgsql volatile
set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- No ORDER BY: every row before the cutoff goes, and rows arrive in time order, so the scan
  -- meets the oldest pages first and stops after batch_size rows.
  with gone as (
    delete from app_public.job_runs r
    where r.ctid = any (array(
      select d.ctid from app_public.job_runs d where d.started_at < now() - older_than limit batch_size))
    returning 1
  )
  select count(*) into deleted from gone;
  remaining := case when deleted < batch_size then 0 else (
    select count(*) from app_public.job_runs r where r.started_at < now() - older_than) end;
end;
$$;
comment on function app_private.sweep_job_runs(integer, interval) is E'Deletes up to batch_size job history rows that started more than older_than ago. Returns how many, and how many remain eligible (0 unless the batch was full).';
