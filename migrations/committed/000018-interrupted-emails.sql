--! Previous: sha1:75e6375e6e6a67a2c7c19544759147e34839899f
--! Hash: sha1:82d9f443c443fdf88171bfa94633698357158659
--! Message: interrupted emails

-- Emails interrupted mid-send. Why: a delivery is claimed (pending -> sending) before it goes out
-- and is never sent twice; but when the worker sending it dies (SIGKILL, OOM, a lost machine), the
-- row stayed `sending` for ever and nobody could tell it from one being sent right now. Each claim
-- now records the job and attempt that made it, so the next attempt of that same job (after crash
-- recovery released it) knows the previous one died mid-send and marks the delivery failed with
-- the reason: it may or may not have arrived, and it is not sent again.

alter table app_private.email_deliveries drop column if exists claimed_by_job;
alter table app_private.email_deliveries drop column if exists claimed_attempt;

alter table app_private.email_deliveries
  add column claimed_by_job bigint,
  add column claimed_attempt integer;
comment on column app_private.email_deliveries.claimed_by_job is E'The graphile-worker job whose attempt (claimed_attempt) claimed the delivery for sending.';
