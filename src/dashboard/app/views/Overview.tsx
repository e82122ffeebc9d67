// The cluster at a glance: totals, each task's queue and recent failures, the workers and their
// heartbeats, and finished runs per minute (last hour) and per hour (last day).
import type { ComponentChildren } from "preact";
import { useQuery } from "@urql/preact";
import { ACTIVITY, OVERVIEW, type ActivityBucket, type TaskRow, type WorkerRow } from "../queries.ts";
import { useLiveRefresh } from "../live.ts";
import { seconds } from "../format.ts";
import { BarChart } from "../BarChart.tsx";
import { Columns, ErrorNote, Time, useNow } from "../ui.tsx";
import { Link, withParams } from "../route.tsx";

function Fact({ label, value, alert }: { label: string; value: ComponentChildren; alert?: boolean }) {
  return (
    <div class={alert ? "fact alert" : "fact"}>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

export function Overview() {
  const now = useNow();
  // "The last 24 hours" to the minute, so the variables (and the cache key) change once a minute.
  const since = new Date(Math.floor(now / 60_000) * 60_000 - 24 * 3_600_000).toISOString();
  const [overview, refreshOverview] = useQuery({ query: OVERVIEW });
  const [activity, refreshActivity] = useQuery({ query: ACTIVITY, variables: { since } });
  useLiveRefresh(() => {
    refreshOverview({ requestPolicy: "network-only" });
    refreshActivity({ requestPolicy: "network-only" });
  });

  const o = overview.data?.jobOverview;
  const tasks = (overview.data?.allTasks?.nodes ?? []).filter((t): t is TaskRow => !!t);
  const workers = (overview.data?.allWorkerProcesses?.nodes ?? []).filter((w): w is WorkerRow => !!w);
  const failures24h = new Map<string, number>();
  for (const s of activity.data?.jobStats?.nodes ?? []) {
    if (s?.failure) failures24h.set(s.taskIdentifier, (failures24h.get(s.taskIdentifier) ?? 0) + Number(s.runs));
  }
  const buckets = (list: { nodes: (ActivityBucket | null)[] } | null | undefined) => (list?.nodes ?? []).filter((b): b is ActivityBucket => !!b);
  // Tasks with something to show first; idle ones after, alphabetically.
  const busy = (t: TaskRow) => (t.queued ?? 0) + (t.scheduled ?? 0) + (t.running ?? 0) + (t.failed ?? 0) + (failures24h.get(t.identifier) ?? 0);
  const sorted = [...tasks].sort((a, b) => Number(busy(b) > 0) - Number(busy(a) > 0) || a.identifier.localeCompare(b.identifier));

  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <ErrorNote error={overview.error} what="Overview" />
      {o && (
        <dl class="facts">
          <Fact label="Queued (due)" value={o.queued} />
          <Fact label="Scheduled" value={o.scheduled} />
          <Fact label="Running" value={o.running} />
          <Fact label="Failed" value={o.failed} alert={!!o.failed} />
          <Fact label="Oldest due job waiting" value={o.oldestDueAt ? seconds(o.oldestDueSeconds) : "none"} alert={(o.oldestDueSeconds ?? 0) > 60} />
          <Fact label="Failures, last 24 h" value={o.failuresLast24H} alert={!!o.failuresLast24H} />
          <Fact label="Workers alive" value={o.workersAlive} alert={!o.workersAlive} />
          <Fact label="Scheduler" value={o.schedulerHealthy ? "healthy" : "no live worker"} alert={!o.schedulerHealthy} />
        </dl>
      )}

      <h2>Activity</h2>
      <ErrorNote error={activity.error} what="Activity" />
      <div class="charts">
        <BarChart title="Runs per minute, last hour" unit="minute" buckets={buckets(activity.data?.perMinute)} />
        <BarChart title="Runs per hour, last day" unit="hour" buckets={buckets(activity.data?.perHour)} />
      </div>

      <h2>Queue by task</h2>
      <table>
        <Columns names={["Task", "Queued", "Scheduled", "Running", "Failed", "Failures (24 h)", "Oldest due", "Last success", "Last failure"]} numeric={["Queued", "Scheduled", "Running", "Failed", "Failures (24 h)"]} />
        <tbody>
          {sorted.map((t) => (
            <tr key={t.identifier} class={busy(t) ? "" : "idle"}>
              <th scope="row">
                <Link href={withParams("/dashboard/jobs", { task: t.identifier })}>{t.identifier}</Link>
              </th>
              <td class="num">{t.queued}</td>
              <td class="num">{t.scheduled}</td>
              <td class="num">{t.running}</td>
              <td class="num">
                {t.failed ? <Link href={withParams("/dashboard/jobs", { task: t.identifier, state: "failed" })}>{t.failed}</Link> : t.failed}
              </td>
              <td class="num">{failures24h.get(t.identifier) ?? 0}</td>
              <td>
                <Time value={t.oldestDueAt} />
              </td>
              <td>
                <Time value={t.lastSucceededAt} />
              </td>
              <td title={t.lastError ?? undefined}>
                <Time value={t.lastFailedAt} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Workers</h2>
      {!overview.data ? null : workers.length === 0 ? (
        <p class="error">No worker process is heartbeating: nothing runs, and no crontab entry fires.</p>
      ) : (
        <table>
          <Columns names={["Worker", "Tasks", "Running", "Started", "Last heartbeat"]} numeric={["Running"]} />
          <tbody>
            {workers.map((w) => (
              <tr key={w.rowId}>
                <th scope="row">{w.label}</th>
                <td>{w.tasks?.length ? w.tasks.join(", ") : "all"}</td>
                <td class="num">{w.running}</td>
                <td>
                  <Time value={w.startedAt} />
                </td>
                <td>
                  <Time value={w.lastSeenAt} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
