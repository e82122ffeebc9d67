// The queue and the history, filtered by task, state and key prefix (e.g. offers:42: for one
// offer); a job's attempts with their errors and durations; retry, cancel and reschedule.
import { useState } from "preact/hooks";
import { useMutation, useQuery } from "@urql/preact";
import {
  CANCEL_JOB,
  JOB_ATTEMPTS,
  QUEUED_JOBS,
  RECENT_RUNS,
  RESCHEDULE_JOB,
  RETRY_JOB,
  RUNS_BY_KEY_PREFIX,
  type JobRunFilter,
  type QueuedJobFilter,
  type QueuedJobRow,
  type RunRow,
} from "../queries.ts";
import { useLiveRefresh, type JobEvent } from "../live.ts";
import { duration, toLocalInput } from "../format.ts";
import { Columns, Badge, ErrorNote, ReasonField, Time } from "../ui.tsx";
import { Link, navigate, withParams, type Place } from "../route.tsx";

const STATES = ["queued", "scheduled", "running", "failed"];
const PAGE = 100;

interface Filters {
  task: string;
  state: string;
  key: string;
  job: string;
}

function filtersOf(params: URLSearchParams): Filters {
  return { task: params.get("task") ?? "", state: params.get("state") ?? "", key: params.get("key") ?? "", job: params.get("job") ?? "" };
}

const jobsHref = (f: Partial<Filters>) => withParams("/dashboard/jobs", { task: f.task, state: f.state, key: f.key, job: f.job });

function Choice({ label, value, options, onChange }: { label: string; value: string; options: string[]; onChange: (value: string) => void }) {
  return (
    <label>
      {label}
      <select value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">any</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    </label>
  );
}

function FilterForm({ f, tasks }: { f: Filters; tasks: string[] }) {
  const [key, setKey] = useState(f.key);
  const apply = (next: Partial<Filters>) => navigate(jobsHref({ ...f, ...next, job: "" }), { replace: true });
  return (
    <form
      class="filters"
      role="search"
      onSubmit={(e) => {
        e.preventDefault();
        apply({ key: key.trim() });
      }}
    >
      <Choice label="Task" value={f.task} options={tasks} onChange={(task) => apply({ task })} />
      <Choice label="State" value={f.state} options={STATES} onChange={(state) => apply({ state })} />
      <label>
        Key prefix
        <input type="search" value={key} placeholder="offers:42:" onInput={(e) => setKey(e.currentTarget.value)} />
      </label>
      <button type="submit">Filter</button>
      {(f.task || f.state || f.key) && (
        <Link href="/dashboard/jobs" class="clear">
          Clear filters
        </Link>
      )}
    </form>
  );
}

/** When the job runs next; a failed job keeps a run_at, but nothing runs it until it is retried. */
function RunAt({ job }: { job: QueuedJobRow }) {
  return job.state === "failed" ? <span class="muted">not again (out of attempts)</span> : <Time value={job.runAt} />;
}

function RunsTable({ runs, caption, jobHref }: { runs: RunRow[]; caption: string; jobHref?: (jobId: string) => string }) {
  const showJob = !!jobHref;
  return (
    <table>
      <caption>{caption}</caption>
      <Columns names={[...(showJob ? ["Job", "Task", "Key"] : []), "Attempt", "Outcome", "Started", "Duration", "Worker", "Error"]} numeric={["Duration"]} />
      <tbody>
        {runs.map((r) => (
          <tr key={r.rowId}>
            {jobHref && (
              <td>
                <Link href={jobHref(r.jobId)}>{r.jobId}</Link>
              </td>
            )}
            {showJob && <td>{r.taskIdentifier}</td>}
            {showJob && <td class="key">{r.jobKey}</td>}
            <td>
              {r.attempt} of {r.maxAttempts}
            </td>
            <td>
              <Badge value={r.outcome} />
            </td>
            <td>
              <Time value={r.startedAt} />
            </td>
            <td class="num">{duration(r.durationMs)}</td>
            <td>{r.workerId}</td>
            <td class="error-text">{r.error}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function JobActions({ job, refresh }: { job: QueuedJobRow; refresh: () => void }) {
  const [reason, setReason] = useState("");
  const [runAt, setRunAt] = useState(() => toLocalInput(new Date(Date.now() + 3_600_000)));
  const [note, setNote] = useState<string | null>(null);
  const [retry, doRetry] = useMutation(RETRY_JOB);
  const [cancel, doCancel] = useMutation(CANCEL_JOB);
  const [reschedule, doReschedule] = useMutation(RESCHEDULE_JOB);
  const busy = retry.fetching || cancel.fetching || reschedule.fetching;
  const why = reason.trim() || null;
  const finish = (message: string) => {
    setReason("");
    setNote(message);
    refresh();
  };
  const act = async (what: "retry" | "cancel" | "reschedule") => {
    setNote(null);
    if (what === "retry") {
      const r = await doRetry({ jobId: job.rowId, reason: why });
      if (!r.error) finish(`Retrying: ${r.data?.retryJob?.result?.state ?? "queued"}.`);
    } else if (what === "cancel") {
      if (!why) return setNote("Give a reason for cancelling: it goes to the audit.");
      if (!(await doCancel({ jobId: job.rowId, reason: why })).error) finish("Cancelled: removed from the queue.");
    } else {
      const at = new Date(runAt);
      if (Number.isNaN(at.getTime())) return setNote("Choose when it should run.");
      if (!(await doReschedule({ jobId: job.rowId, runAt: at.toISOString(), reason: why })).error) finish("Rescheduled.");
    }
  };
  if (job.state === "running") return <p class="muted">Running on {job.lockedBy}: it can be acted on once this attempt ends.</p>;
  return (
    <div class="actions">
      <ReasonField id={`job-reason-${job.rowId}`} label={`Reason for job ${job.rowId}`} value={reason} onInput={setReason} />
      <button type="button" disabled={busy} onClick={() => act("retry")}>
        Retry now
      </button>
      <button type="button" disabled={busy} onClick={() => act("cancel")}>
        Cancel job
      </button>
      <label class="inline">
        Run at (your local time)
        <input type="datetime-local" value={runAt} onInput={(e) => setRunAt(e.currentTarget.value)} />
      </label>
      <button type="button" disabled={busy} onClick={() => act("reschedule")}>
        Reschedule
      </button>
      {note && <p role="status">{note}</p>}
      <ErrorNote error={retry.error ?? cancel.error ?? reschedule.error} />
    </div>
  );
}

function JobDetail({ jobId, closeHref, refreshList }: { jobId: string; closeHref: string; refreshList: () => void }) {
  const [result, reexecute] = useQuery({ query: JOB_ATTEMPTS, variables: { jobId } });
  const refresh = () => {
    reexecute({ requestPolicy: "network-only" });
    refreshList();
  };
  useLiveRefresh(() => reexecute({ requestPolicy: "network-only" }), (e) => e.jobId === jobId);
  const job = result.data?.queuedJobByRowId;
  const runs = (result.data?.allJobRuns?.nodes ?? []).filter((r): r is RunRow => !!r);
  const task = job?.taskIdentifier ?? runs[0]?.taskIdentifier;
  return (
    <section class="panel" aria-labelledby="job-title">
      <h2 id="job-title">
        Job {jobId}
        {task && <> · {task}</>}
      </h2>
      <ErrorNote error={result.error} what={`Job ${jobId}`} />
      {job ? (
        <>
          <dl class="inline-facts">
            <dt>State</dt>
            <dd>
              <Badge value={job.state} />
            </dd>
            <dt>Key</dt>
            <dd class="key">{job.key ?? "—"}</dd>
            <dt>Run at</dt>
            <dd>
              <RunAt job={job} />
            </dd>
            <dt>Attempts</dt>
            <dd>
              {job.attempts} of {job.maxAttempts}
            </dd>
          </dl>
          {job.lastError && <p class="error-text">Last error: {job.lastError}</p>}
          <JobActions job={job} refresh={refresh} />
        </>
      ) : (
        result.data && <p>Not in the queue: it has finished or was cancelled. Its history stays below.</p>
      )}
      {runs.length ? <RunsTable runs={runs} caption={`Attempts of job ${jobId}`} /> : result.data && <p class="muted">No attempt yet.</p>}
      <p>
        <Link href={closeHref}>Close</Link>
      </p>
    </section>
  );
}

export function Jobs({ place }: { place: Place }) {
  const f = filtersOf(place.params);
  // The API refuses an empty or null filter: without conditions the variable is left out.
  const queueFilter: QueuedJobFilter | undefined =
    f.task || f.state || f.key
      ? {
          ...(f.task ? { taskIdentifier: { equalTo: f.task } } : {}),
          ...(f.state ? { state: { equalTo: f.state } } : {}),
          ...(f.key ? { key: { startsWith: f.key } } : {}),
        }
      : undefined;
  const runFilter: JobRunFilter | undefined = f.task ? { taskIdentifier: { equalTo: f.task } } : undefined;
  const [queue, reQueue] = useQuery({ query: QUEUED_JOBS, variables: { filter: queueFilter, first: PAGE } });
  const [recent, reRecent] = useQuery({ query: RECENT_RUNS, variables: { filter: runFilter, first: 50 }, pause: !!f.key });
  const [byKey, reByKey] = useQuery({ query: RUNS_BY_KEY_PREFIX, variables: { prefix: f.key, filter: runFilter, first: 50 }, pause: !f.key });
  const refresh = () => {
    reQueue({ requestPolicy: "network-only" });
    if (f.key) reByKey({ requestPolicy: "network-only" });
    else reRecent({ requestPolicy: "network-only" });
  };
  const concerns = (e: JobEvent) => (!f.task || e.taskIdentifier === f.task) && (!f.key || (e.jobKey ?? "").startsWith(f.key));
  useLiveRefresh(refresh, concerns);

  const tasks = (queue.data?.allTasks?.nodes ?? []).flatMap((t) => (t ? [t.identifier] : []));
  const jobs = (queue.data?.allQueuedJobs?.nodes ?? []).filter((j): j is QueuedJobRow => !!j);
  const total = queue.data?.allQueuedJobs?.totalCount ?? 0;
  const history = f.key ? byKey : recent;
  const runs = ((f.key ? byKey.data?.jobRunsByKeyPrefix?.nodes : recent.data?.allJobRuns?.nodes) ?? []).filter((r): r is RunRow => !!r);

  return (
    <section aria-labelledby="jobs-title">
      <h1 id="jobs-title">Jobs</h1>
      <FilterForm key={f.key} f={f} tasks={tasks} />
      {f.job && <JobDetail key={f.job} jobId={f.job} closeHref={jobsHref({ ...f, job: "" })} refreshList={refresh} />}

      <h2>Queue</h2>
      <ErrorNote error={queue.error} what="Queue" />
      {!queue.data ? (
        queue.fetching && <p role="status">Loading…</p>
      ) : jobs.length === 0 ? (
        <p class="muted">No job in the queue matches.</p>
      ) : (
        <table>
          <caption>
            {total > jobs.length ? `The newest ${jobs.length} of ${total} jobs` : `${total} job${total === 1 ? "" : "s"}`}
          </caption>
          <Columns names={["Job", "Task", "Key", "State", "Run at", "Attempts", "Last error"]} />
          <tbody>
            {jobs.map((j) => (
              <tr key={j.rowId} class={j.rowId === f.job ? "selected" : ""}>
                <td>
                  <Link href={jobsHref({ ...f, job: j.rowId })} aria-label={`Job ${j.rowId}: attempts and actions`}>
                    {j.rowId}
                  </Link>
                </td>
                <td>{j.taskIdentifier}</td>
                <td class="key">{j.key}</td>
                <td>
                  <Badge value={j.state} />
                </td>
                <td>
                  <RunAt job={j} />
                </td>
                <td>
                  {j.attempts} of {j.maxAttempts}
                </td>
                <td class="error-text">{j.lastError}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>History</h2>
      <ErrorNote error={history.error} what="History" />
      {!history.data ? (
        history.fetching && <p role="status">Loading…</p>
      ) : runs.length === 0 ? (
        <p class="muted">No run matches.</p>
      ) : (
        <RunsTable runs={runs} caption={`The latest ${runs.length} runs${f.key ? ` of jobs keyed ${f.key}…` : ""}`} jobHref={(id) => jobsHref({ ...f, job: id })} />
      )}
    </section>
  );
}
