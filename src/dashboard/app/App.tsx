// The app's frame: sign-in and the sign-in link, the admin check, the header with navigation and
// the live indicator, and the one jobEvents subscription that keeps every view current.
import type { ComponentChildren } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { CombinedError } from "@urql/core";
import { Provider, useMutation, useQuery, useSubscription } from "@urql/preact";
import { connect, type Connection, type LiveState } from "./client.ts";
import { CURRENT_USER, JOB_EVENTS, LOGIN, LOGOUT, type CurrentUser } from "./queries.ts";
import { publish } from "./live.ts";
import { clearToken, loadToken, saveToken } from "./session.ts";
import { Link, usePlace } from "./route.tsx";
import { ErrorNote } from "./ui.tsx";
import { SignIn } from "./views/SignIn.tsx";
import { Overview } from "./views/Overview.tsx";
import { Schedules } from "./views/Schedules.tsx";
import { Jobs } from "./views/Jobs.tsx";
import { Audit } from "./views/Audit.tsx";

const VIEWS = [
  { path: "/dashboard", title: "Overview" },
  { path: "/dashboard/schedules", title: "Schedules" },
  { path: "/dashboard/jobs", title: "Jobs" },
  { path: "/dashboard/audit", title: "Audit" },
];

/**
 * The token of a sign-in link when the page was opened at /login?token=..., taken out of the
 * address bar and the history at once (so it is not bookmarked, synced or shown on screen).
 */
export function takeLinkToken(): string | null {
  if (location.pathname !== "/login") return null;
  const token = new URLSearchParams(location.search).get("token");
  history.replaceState(null, "", "/dashboard");
  return token;
}

export function App({ linkToken }: { linkToken: string | null }) {
  // A sign-in link replaces whatever session this tab had; it is exchanged once, then forgotten.
  const [link, setLink] = useState(linkToken);
  const [token, setToken] = useState(() => (linkToken ? (clearToken(), null) : loadToken()));
  const [notice, setNotice] = useState<ComponentChildren>(null);
  const conn = useMemo(
    () =>
      connect(token, () => {
        clearToken();
        setToken(null);
        setNotice(<p class="notice">Your session has ended. Sign in again.</p>);
      }),
    [token],
  );
  useEffect(() => () => conn.close(), [conn]);
  const signedIn = (t: string) => {
    saveToken(t);
    setNotice(null);
    setToken(t);
  };
  const signedOut = () => {
    clearToken();
    setToken(null);
  };
  return (
    <Provider value={conn.client}>
      {link ? (
        <ConsumeLink
          linkToken={link}
          onDone={(session, error) => {
            setLink(null);
            if (session) signedIn(session);
            else setNotice(<ErrorNote error={error} what="That sign-in link did not work" />);
          }}
        />
      ) : token ? (
        <Gate conn={conn} onSignOut={signedOut} />
      ) : (
        <SignIn notice={notice} />
      )}
    </Provider>
  );
}

function ConsumeLink({ linkToken, onDone }: { linkToken: string; onDone: (session: string | null, error?: CombinedError) => void }) {
  const [, exchange] = useMutation(LOGIN);
  const started = useRef(false);
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    void exchange({ token: linkToken }).then((r) => onDone(r.data?.login?.result ?? null, r.error));
  }, []);
  return (
    <main class="narrow" id="main">
      <p role="status">Signing in…</p>
    </main>
  );
}

function Gate({ conn, onSignOut }: { conn: Connection; onSignOut: () => void }) {
  const [me, recheck] = useQuery({ query: CURRENT_USER });
  const [, logout] = useMutation(LOGOUT);
  const signOut = async () => {
    await logout({});
    onSignOut();
  };
  const user = me.data?.currentUser;
  if (me.error) {
    return (
      <main class="narrow" id="main">
        <ErrorNote error={me.error} what="Could not load your account" />
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </main>
    );
  }
  if (!me.data) {
    return (
      <main class="narrow" id="main">
        <p role="status">Loading…</p>
      </main>
    );
  }
  if (!user || !user.isAdmin) {
    return (
      <main class="narrow" id="main">
        <h1>Admins only</h1>
        <p>
          {user ? (
            <>
              You are signed in as <strong>{user.email}</strong>, which is not an admin account.
            </>
          ) : (
            "Your session is not valid any more."
          )}{" "}
          The operations dashboard, and the job control plane behind it, are for admins only. An admin can grant access (
          <code>users.is_admin</code>).
        </p>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </main>
    );
  }
  return <Shell conn={conn} user={user} onSignOut={signOut} recheckAccess={() => recheck({ requestPolicy: "network-only" })} />;
}

const LIVE_TEXT: Record<LiveState, string> = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…" };

const RESUBSCRIBE_MS = 5000;

function Shell({ conn, user, onSignOut, recheckAccess }: { conn: Connection; user: CurrentUser; onSignOut: () => void; recheckAccess: () => void }) {
  const place = usePlace();
  const [live, setLive] = useState<LiveState>(conn.live.state);
  const [events, resubscribe] = useSubscription({ query: JOB_EVENTS, variables: {} }, (_prev, data) => {
    publish(data.jobEvents);
    return data;
  });
  // The API ends a subscription with an error when its session is no longer an admin's (ADMIN)
  // or when it lost its own LISTEN connection. Check the session first: signed out or no longer
  // an admin, this view goes away; otherwise subscribe again a little later and re-read.
  // (urql keeps a subscription's last error until a new event arrives: track the failure here.)
  const [failed, setFailed] = useState<CombinedError | null>(null);
  useEffect(() => {
    if (events.error) setFailed(events.error);
  }, [events.error]);
  useEffect(() => {
    if (!failed) return;
    recheckAccess();
    const timer = setTimeout(() => {
      setFailed(null);
      resubscribe();
      publish("reconnected");
    }, RESUBSCRIBE_MS);
    return () => clearTimeout(timer);
  }, [failed]);
  useEffect(() => {
    setLive(conn.live.state);
    return conn.live.listen((state, reconnected) => {
      setLive(state);
      if (reconnected) publish("reconnected");
    });
  }, [conn]);
  const view = VIEWS.find((v) => v.path === place.path);
  useEffect(() => {
    document.title = `${view?.title ?? "Not found"} · Hourglass`;
  }, [view]);
  return (
    <>
      <header>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <span class="brand">Hourglass</span>
        <nav aria-label="Views">
          {VIEWS.map((v) => (
            <Link key={v.path} href={v.path} aria-current={v === view ? "page" : undefined}>
              {v.title}
            </Link>
          ))}
        </nav>
        <span class={`live ${failed ? "off" : live}`} role="status" title="Updates arrive over a websocket without reloading">
          {failed ? "not live" : LIVE_TEXT[live]}
        </span>
        <span class="who">{user.email}</span>
        <button type="button" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main">
        <ErrorNote error={failed} what="Live updates (retrying)" />
        <Route place={place} />
      </main>
    </>
  );
}

function Route({ place }: { place: ReturnType<typeof usePlace> }) {
  switch (place.path) {
    case "/dashboard":
      return <Overview />;
    case "/dashboard/schedules":
      return <Schedules />;
    case "/dashboard/jobs":
      return <Jobs place={place} />;
    case "/dashboard/audit":
      return <Audit />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>
            There is no view at {place.path}. <Link href="/dashboard">Go to the overview.</Link>
          </p>
        </section>
      );
  }
}
