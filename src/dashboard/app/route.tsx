// The app's few routes, on the History API: /dashboard[/schedules|/jobs|/audit] with filters in
// the query string (so a view can be bookmarked and shared), and /login, the sign-in link's target.
import { useEffect, useState } from "preact/hooks";
import type { AnchorHTMLAttributes, TargetedMouseEvent } from "preact";

export interface Place {
  path: string;
  params: URLSearchParams;
}

const listeners = new Set<() => void>();

function here(): Place {
  return { path: location.pathname.replace(/\/+$/, "") || "/", params: new URLSearchParams(location.search) };
}

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  for (const l of listeners) l();
}

/** The current place; re-renders on navigation and on the browser's back and forward. */
export function usePlace(): Place {
  const [place, setPlace] = useState(here);
  useEffect(() => {
    const update = () => setPlace(here());
    listeners.add(update);
    addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      removeEventListener("popstate", update);
    };
  }, []);
  return place;
}

/** The path with its query string built from params (empty values left out). */
export function withParams(path: string, params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** A link that navigates inside the app (a modified click still opens a new tab). */
export function Link(props: AnchorHTMLAttributes & { href: string }) {
  const onClick = (e: TargetedMouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.href);
  };
  return <a {...props} onClick={onClick} />;
}
