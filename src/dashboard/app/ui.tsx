// Small pieces every view uses: times that stay current, API errors shown as the API sent them,
// outcome and state labels, and a reason field for audited actions.
import { useEffect, useState } from "preact/hooks";
import type { CombinedError } from "@urql/core";
import { exact, relative } from "./format.ts";

const clockListeners = new Set<(now: number) => void>();
let clock: ReturnType<typeof setInterval> | undefined;

/** The current time, updated every 5 s while any component shows a relative time. */
export function useNow(): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    clockListeners.add(setNow);
    clock ??= setInterval(() => {
      const t = Date.now();
      for (const l of clockListeners) l(t);
    }, 5000);
    return () => {
      clockListeners.delete(setNow);
      if (!clockListeners.size) {
        clearInterval(clock);
        clock = undefined;
      }
    };
  }, []);
  return now;
}

export function Time({ value }: { value: string | null | undefined }) {
  const now = useNow();
  if (!value) return <span class="muted">—</span>;
  return (
    <time dateTime={value} title={exact(value)}>
      {relative(value, now)}
    </time>
  );
}

/** An API error as it came: each GraphQL error's code and message, or the network failure. */
export function ErrorNote({ error, what }: { error: CombinedError | Error | null | undefined; what?: string }) {
  if (!error) return null;
  const items =
    "graphQLErrors" in error && error.graphQLErrors.length
      ? error.graphQLErrors.map((e) => ({ code: (e.extensions?.code as string | undefined) ?? null, message: e.message }))
      : [{ code: null, message: "networkError" in error && error.networkError ? `Network error: ${error.networkError.message}` : error.message }];
  return (
    <div class="error" role="alert">
      {what && <strong>{what}: </strong>}
      {items.map((e, i) => (
        <span key={i}>
          {e.code && <code>{e.code}</code>} {e.message}
        </span>
      ))}
    </div>
  );
}

const TONE: Record<string, string> = {
  succeeded: "good",
  failed_retrying: "warn",
  failed_permanently: "bad",
  failed: "bad",
  timed_out: "bad",
  abandoned: "bad",
  skipped: "muted",
  running: "info",
  queued: "info",
  scheduled: "muted",
  paused: "warn",
};

/** A run's outcome or a job's state, as a labelled badge (the word itself carries the meaning). */
export function Badge({ value }: { value: string | null | undefined }) {
  if (!value) return <span class="muted">—</span>;
  return <span class={`badge ${TONE[value] ?? ""}`}>{value.replace(/_/g, " ")}</span>;
}

/** A table's header row; the columns named in `numeric` are right-aligned. */
export function Columns({ names, numeric = [] }: { names: string[]; numeric?: string[] }) {
  return (
    <thead>
      <tr>
        {names.map((n) => (
          <th key={n} scope="col" class={numeric.includes(n) ? "num" : undefined}>
            {n}
          </th>
        ))}
      </tr>
    </thead>
  );
}

export function ReasonField({ id, label, value, onInput }: { id: string; label: string; value: string; onInput: (v: string) => void }) {
  return (
    <label class="reason" htmlFor={id}>
      <span class="visually-hidden">{label}</span>
      <input
        id={id}
        type="text"
        placeholder="reason (audited)"
        value={value}
        maxLength={500}
        onInput={(e) => onInput(e.currentTarget.value)}
      />
    </label>
  );
}
