// Live updates: the shell subscribes once to jobEvents and hands every event here; each view
// registers what it shows and refetches when something it shows moved — after 300 ms without
// events, but at least once a second during a steady stream, so a busy cluster neither floods the
// API with refetches nor freezes the page. Events missed while the websocket was down or the
// subscription was being renewed are not replayed, so everything refreshes then.
import { useEffect, useRef } from "preact/hooks";

export interface JobEvent {
  kind: string;
  at: string;
  jobId: string | null;
  runId?: string | null;
  taskIdentifier: string | null;
  jobKey: string | null;
  attempt?: number | null;
  outcome: string | null;
  scheduleId: string | null;
}

type Listener = (event: JobEvent | "reconnected") => void;
const listeners = new Set<Listener>();

export function publish(event: JobEvent | "reconnected"): void {
  for (const l of listeners) l(event);
}

const QUIET_MS = 300;
const MAX_WAIT_MS = 1000;

/**
 * Calls refresh when an event that `concerns` accepts arrives (all of them by default), debounced.
 * refresh and concerns may change between renders; the latest ones are used.
 */
export function useLiveRefresh(refresh: () => void, concerns: (event: JobEvent) => boolean = () => true): void {
  const latest = useRef({ refresh, concerns });
  latest.current = { refresh, concerns };
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let first = 0;
    const listener: Listener = (event) => {
      // An overflow event stands for more changes than were sent one by one, and an admin's action
      // (a cancel, a reschedule) names its target only as text: everyone re-reads.
      const everyone = event === "reconnected" || event.kind === "overflow" || event.kind === "admin_action";
      if (!everyone && !latest.current.concerns(event)) return;
      const now = Date.now();
      if (timer === undefined) first = now;
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        latest.current.refresh();
      }, Math.max(0, Math.min(QUIET_MS, first + MAX_WAIT_MS - now)));
    };
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      clearTimeout(timer);
    };
  }, []);
}
