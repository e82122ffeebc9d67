// Every GraphQL operation the dashboard sends, with the shapes of their results. The page can do
// nothing a script with an admin's token cannot do with these same operations.
import { gql } from "@urql/core";
import type { JobEvent } from "./live.ts";

// ---- Sign-in

export const REQUEST_LOGIN_LINK = gql<{ requestLoginLink: { result: boolean } | null }, { email: string }>`
  mutation RequestLoginLink($email: String!) {
    requestLoginLink(input: { email: $email }) { result }
  }
`;

export const LOGIN = gql<{ login: { result: string | null } | null }, { token: string }>`
  mutation Login($token: String!) {
    login(input: { token: $token }) { result }
  }
`;

export const LOGOUT = gql<{ logout: { result: boolean } | null }, Record<string, never>>`
  mutation Logout {
    logout(input: {}) { result }
  }
`;

export interface CurrentUser {
  rowId: string;
  email: string;
  name: string | null;
  isAdmin: boolean;
}
export const CURRENT_USER = gql<{ currentUser: CurrentUser | null }, Record<string, never>>`
  query CurrentUser {
    currentUser { rowId email name isAdmin }
  }
`;

// ---- Live events

export const JOB_EVENTS = gql<{ jobEvents: JobEvent }, { tasks?: string[] | null; keyPrefix?: string | null }>`
  subscription JobEvents($tasks: [String!], $keyPrefix: String) {
    jobEvents(tasks: $tasks, keyPrefix: $keyPrefix) { kind at jobId runId taskIdentifier jobKey attempt outcome scheduleId }
  }
`;

// ---- Overview

export interface TaskRow {
  identifier: string;
  queued: number | null;
  scheduled: number | null;
  running: number | null;
  failed: number | null;
  oldestDueAt: string | null;
  lastSucceededAt: string | null;
  lastFailedAt: string | null;
  lastError: string | null;
}
export interface WorkerRow {
  rowId: string;
  label: string;
  tasks: (string | null)[] | null;
  running: number;
  startedAt: string;
  lastSeenAt: string;
}
export interface Overview {
  jobOverview: {
    queued: number | null;
    scheduled: number | null;
    running: number | null;
    failed: number | null;
    oldestDueAt: string | null;
    oldestDueSeconds: number | null;
    failuresLast24H: number | null;
    workersAlive: number | null;
    schedulerHealthy: boolean | null;
  } | null;
  allTasks: { nodes: (TaskRow | null)[] } | null;
  allWorkerProcesses: { nodes: (WorkerRow | null)[] } | null;
}
export const OVERVIEW = gql<Overview, Record<string, never>>`
  query Overview {
    jobOverview { queued scheduled running failed oldestDueAt oldestDueSeconds failuresLast24H workersAlive schedulerHealthy }
    allTasks(orderBy: [IDENTIFIER_ASC]) {
      nodes { identifier queued scheduled running failed oldestDueAt lastSucceededAt lastFailedAt lastError }
    }
    allWorkerProcesses(orderBy: [LAST_SEEN_AT_DESC]) {
      nodes { rowId label tasks running startedAt lastSeenAt }
    }
  }
`;

export interface ActivityBucket {
  bucket: string;
  runs: string;
  failures: string;
}
export interface TaskStat {
  taskIdentifier: string;
  outcome: string;
  /** Whether the outcome counts as a failure (the API decides: failed, timed out or abandoned). */
  failure: boolean;
  runs: string;
}
type Nodes<T> = { nodes: (T | null)[] } | null;
export const ACTIVITY = gql<{ perMinute: Nodes<ActivityBucket>; perHour: Nodes<ActivityBucket>; jobStats: Nodes<TaskStat> }, { since: string }>`
  query Activity($since: Datetime!) {
    perMinute: jobActivity(resolution: "minute") { nodes { bucket runs failures } }
    perHour: jobActivity(resolution: "hour") { nodes { bucket runs failures } }
    jobStats(since: $since) { nodes { taskIdentifier outcome failure runs } }
  }
`;

// ---- Schedules

export interface ScheduleRow {
  rowId: string;
  pattern: string;
  taskIdentifier: string;
  pausedAt: string | null;
  pauseReason: string | null;
  userByPausedBy: { email: string } | null;
  nextRunAt: string | null;
  lastRun: { rowId: string; outcome: string; startedAt: string; durationMs: number | null; error: string | null } | null;
}
export const SCHEDULES = gql<{ allSchedules: { nodes: (ScheduleRow | null)[] } | null }, Record<string, never>>`
  query Schedules {
    allSchedules(orderBy: [ROW_ID_ASC]) {
      nodes {
        rowId pattern taskIdentifier pausedAt pauseReason userByPausedBy { email } nextRunAt
        lastRun { rowId outcome startedAt durationMs error }
      }
    }
  }
`;

export const PAUSE_SCHEDULE = gql<{ pauseSchedule: { result: { rowId: string; pausedAt: string | null } | null } | null }, { id: string; reason: string }>`
  mutation PauseSchedule($id: String!, $reason: String!) {
    pauseSchedule(input: { scheduleId: $id, reason: $reason }) { result { rowId pausedAt pauseReason } }
  }
`;

export const RESUME_SCHEDULE = gql<
  { resumeSchedule: { result: { rowId: string; pausedAt: string | null } | null } | null },
  { id: string; reason: string | null; replay: boolean }
>`
  mutation ResumeSchedule($id: String!, $reason: String, $replay: Boolean) {
    resumeSchedule(input: { scheduleId: $id, reason: $reason, replay: $replay }) { result { rowId pausedAt pauseReason } }
  }
`;

export const RUN_SCHEDULE = gql<{ runSchedule: { result: { rowId: string; state: string | null } | null } | null }, { id: string; reason: string | null }>`
  mutation RunSchedule($id: String!, $reason: String) {
    runSchedule(input: { scheduleId: $id, reason: $reason }) { result { rowId state } }
  }
`;

// ---- Jobs

export interface QueuedJobRow {
  rowId: string;
  taskIdentifier: string | null;
  key: string | null;
  state: string | null;
  runAt: string | null;
  attempts: number | null;
  maxAttempts: number | null;
  lastError: string | null;
  lockedBy: string | null;
}
export interface QueuedJobFilter {
  taskIdentifier?: { equalTo: string };
  state?: { equalTo: string };
  key?: { startsWith: string };
}
export const QUEUED_JOBS = gql<
  { allQueuedJobs: { totalCount: number; nodes: (QueuedJobRow | null)[] } | null; allTasks: { nodes: ({ identifier: string } | null)[] } | null },
  { filter?: QueuedJobFilter; first: number }
>`
  query QueuedJobs($filter: QueuedJobFilter, $first: Int!) {
    allQueuedJobs(filter: $filter, orderBy: [ROW_ID_DESC], first: $first) {
      totalCount
      nodes { rowId taskIdentifier key state runAt attempts maxAttempts lastError lockedBy }
    }
    allTasks(orderBy: [IDENTIFIER_ASC]) { nodes { identifier } }
  }
`;

export interface RunRow {
  rowId: string;
  jobId: string;
  taskIdentifier: string;
  jobKey: string | null;
  attempt: number;
  maxAttempts: number;
  outcome: string;
  startedAt: string;
  finishedAt: string | null;
  durationMs: number | null;
  error: string | null;
  workerId: string;
}
const RUN_FIELDS = "rowId jobId taskIdentifier jobKey attempt maxAttempts outcome startedAt finishedAt durationMs error workerId";

export interface JobRunFilter {
  taskIdentifier?: { equalTo: string };
  jobId?: { equalTo: string };
}
export const RECENT_RUNS = gql<{ allJobRuns: { nodes: (RunRow | null)[] } | null }, { filter?: JobRunFilter; first: number }>`
  query RecentRuns($filter: JobRunFilter, $first: Int!) {
    allJobRuns(filter: $filter, orderBy: [STARTED_AT_DESC], first: $first) { nodes { ${RUN_FIELDS} } }
  }
`;

// By key prefix through the key index (a startsWith filter on allJobRuns cannot use it under RLS).
export const RUNS_BY_KEY_PREFIX = gql<{ jobRunsByKeyPrefix: { nodes: (RunRow | null)[] } | null }, { prefix: string; filter?: JobRunFilter; first: number }>`
  query RunsByKeyPrefix($prefix: String!, $filter: JobRunFilter, $first: Int!) {
    jobRunsByKeyPrefix(prefix: $prefix, filter: $filter, first: $first) { nodes { ${RUN_FIELDS} } }
  }
`;

export const JOB_ATTEMPTS = gql<
  { queuedJobByRowId: QueuedJobRow | null; allJobRuns: { nodes: (RunRow | null)[] } | null },
  { jobId: string }
>`
  query JobAttempts($jobId: BigInt!) {
    queuedJobByRowId(rowId: $jobId) { rowId taskIdentifier key state runAt attempts maxAttempts lastError lockedBy }
    allJobRuns(filter: { jobId: { equalTo: $jobId } }, orderBy: [STARTED_AT_ASC]) { nodes { ${RUN_FIELDS} } }
  }
`;

type JobResult = { result: { rowId: string; state: string | null; runAt: string | null } | null } | null;
export const RETRY_JOB = gql<{ retryJob: JobResult }, { jobId: string; reason: string | null }>`
  mutation RetryJob($jobId: BigInt!, $reason: String) {
    retryJob(input: { jobId: $jobId, reason: $reason }) { result { rowId state runAt } }
  }
`;

export const CANCEL_JOB = gql<{ cancelJob: { result: boolean | null } | null }, { jobId: string; reason: string | null }>`
  mutation CancelJob($jobId: BigInt!, $reason: String) {
    cancelJob(input: { jobId: $jobId, reason: $reason }) { result }
  }
`;

export const RESCHEDULE_JOB = gql<{ rescheduleJob: JobResult }, { jobId: string; runAt: string; reason: string | null }>`
  mutation RescheduleJob($jobId: BigInt!, $runAt: Datetime!, $reason: String) {
    rescheduleJob(input: { jobId: $jobId, runAt: $runAt, reason: $reason }) { result { rowId state runAt } }
  }
`;

// ---- Audit

export interface AdminActionRow {
  rowId: string;
  action: string;
  target: string;
  reason: string | null;
  details: Record<string, unknown>;
  createdAt: string;
  userByActorId: { email: string } | null;
}
export const AUDIT = gql<{ allAdminActions: { totalCount: number; nodes: (AdminActionRow | null)[] } | null }, { first: number }>`
  query Audit($first: Int!) {
    allAdminActions(orderBy: [CREATED_AT_DESC, ROW_ID_DESC], first: $first) {
      totalCount
      nodes { rowId action target reason details createdAt userByActorId { email } }
    }
  }
`;
