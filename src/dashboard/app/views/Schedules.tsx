// Every crontab entry with its next and last run; pause and resume (with a reason, optionally
// replaying the ticks the pause skipped) and run now. All audited by the API.
import { useState } from "preact/hooks";
import { useMutation, useQuery } from "@urql/preact";
import { PAUSE_SCHEDULE, RESUME_SCHEDULE, RUN_SCHEDULE, SCHEDULES, type ScheduleRow } from "../queries.ts";
import { useLiveRefresh } from "../live.ts";
import { duration } from "../format.ts";
import { Columns, Badge, ErrorNote, ReasonField, Time } from "../ui.tsx";
import { Link, withParams } from "../route.tsx";

function Actions({ s, refresh }: { s: ScheduleRow; refresh: () => void }) {
  const [reason, setReason] = useState("");
  const [replay, setReplay] = useState(false);
  const [missing, setMissing] = useState(false);
  const [pause, doPause] = useMutation(PAUSE_SCHEDULE);
  const [resume, doResume] = useMutation(RESUME_SCHEDULE);
  const [run, doRun] = useMutation(RUN_SCHEDULE);
  const [done, setDone] = useState<string | null>(null);
  const busy = pause.fetching || resume.fetching || run.fetching;
  const act = async (what: "pause" | "resume" | "run") => {
    setDone(null);
    if (what === "pause" && !reason.trim()) return setMissing(true);
    setMissing(false);
    const why = reason.trim() || null;
    let message: string | null = null;
    if (what === "pause") {
      if (!(await doPause({ id: s.rowId, reason: reason.trim() })).error) message = "Paused.";
    } else if (what === "resume") {
      if (!(await doResume({ id: s.rowId, reason: why, replay })).error) message = replay ? "Resumed; the skipped ticks run once each." : "Resumed.";
    } else {
      const r = await doRun({ id: s.rowId, reason: why });
      if (!r.error) message = `Enqueued as job ${r.data?.runSchedule?.result?.rowId ?? "?"}.`;
    }
    if (message) {
      setReason("");
      setReplay(false);
      setDone(message);
      refresh();
    }
  };
  const error = pause.error ?? resume.error ?? run.error;
  return (
    <div class="actions">
      <ReasonField id={`reason-${s.rowId}`} label={`Reason for ${s.rowId}`} value={reason} onInput={setReason} />
      {s.pausedAt ? (
        <>
          <label class="inline">
            <input type="checkbox" checked={replay} onChange={(e) => setReplay(e.currentTarget.checked)} /> replay skipped ticks
          </label>
          <button type="button" disabled={busy} onClick={() => act("resume")} aria-label={`Resume ${s.rowId}`}>
            Resume
          </button>
        </>
      ) : (
        <button type="button" disabled={busy} onClick={() => act("pause")} aria-label={`Pause ${s.rowId}`}>
          Pause
        </button>
      )}
      <button type="button" disabled={busy} onClick={() => act("run")} aria-label={`Run ${s.rowId} now`}>
        Run now
      </button>
      {missing && (
        <p class="error" role="alert">
          Give a reason for pausing: it is shown here and in the audit.
        </p>
      )}
      {done && <p role="status">{done}</p>}
      <ErrorNote error={error} />
    </div>
  );
}

export function Schedules() {
  const [result, reexecute] = useQuery({ query: SCHEDULES });
  const refresh = () => reexecute({ requestPolicy: "network-only" });
  // Ticks are jobs keyed cron:<id>: their events carry the schedule id, as do pauses and resumes.
  useLiveRefresh(refresh, (e) => e.scheduleId !== null && e.scheduleId !== undefined);
  const rows = (result.data?.allSchedules?.nodes ?? []).filter((s): s is ScheduleRow => !!s);
  return (
    <section aria-labelledby="schedules-title">
      <h1 id="schedules-title">Schedules</h1>
      <p class="muted">The crontab's entries (times in UTC). A paused entry's ticks are recorded as skipped until it is resumed.</p>
      <ErrorNote error={result.error} what="Schedules" />
      <table>
        <Columns names={["Entry", "Pattern", "Task", "State", "Next run", "Last run", "Actions"]} />
        <tbody>
          {rows.map((s) => (
            <tr key={s.rowId} class={s.pausedAt ? "paused" : ""}>
              <th scope="row">{s.rowId}</th>
              <td class="nowrap">
                <code>{s.pattern}</code>
              </td>
              <td>
                <Link href={withParams("/dashboard/jobs", { task: s.taskIdentifier, key: `cron:${s.rowId}` })}>{s.taskIdentifier}</Link>
              </td>
              <td>
                {s.pausedAt ? (
                  <>
                    <Badge value="paused" /> <Time value={s.pausedAt} />
                    {s.userByPausedBy && <> by {s.userByPausedBy.email}</>}
                    {s.pauseReason && <div class="reason-text">“{s.pauseReason}”</div>}
                  </>
                ) : (
                  "active"
                )}
              </td>
              <td>{s.pausedAt ? <span class="muted">skipped while paused</span> : <Time value={s.nextRunAt} />}</td>
              <td>
                {s.lastRun ? (
                  <>
                    <Badge value={s.lastRun.outcome} /> <Time value={s.lastRun.startedAt} />
                    {s.lastRun.durationMs !== null && <span class="muted"> · {duration(s.lastRun.durationMs)}</span>}
                    {s.lastRun.error && <div class="error-text">{s.lastRun.error}</div>}
                  </>
                ) : (
                  <span class="muted">never</span>
                )}
              </td>
              <td>
                <Actions s={s} refresh={refresh} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
