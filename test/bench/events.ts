// Live-event benchmark for `npm run bench` (section 9): how long a job event takes from the commit
// that causes it to a jobEvents subscriber, through a real API process (test/bench/control.ts run
// as a child) over graphql-ws. One job enqueued every 20 ms (50/s) for 20 s, each in its own
// transaction by a trigger-free add_job; latency = arrival at the client − commit (both clocks
// are this machine's).
import { randomBytes } from "node:crypto";
import { createClient } from "graphql-ws";
import pg from "pg";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { spawnApi } from "./control.ts";
import { lateness, type BenchHelpers, type Lateness } from "./offers.ts";

export const EVENTS_PER_SECOND = 50;
export const EVENTS_SECONDS = 20;

export async function eventLatency(serverUrl: string, h: BenchHelpers): Promise<Lateness> {
  const tasks = await loadTasks();
  const db = await h.benchDatabase(serverUrl, "hg_bench_events", tasks);
  const password = randomBytes(12).toString("hex");
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  let api: Awaited<ReturnType<typeof spawnApi>> | undefined;
  let ws: ReturnType<typeof createClient> | undefined;
  try {
    await pool.query(`alter role ${pg.escapeIdentifier(db.roles.authenticator!)} password ${pg.escapeLiteral(password)}`);
    const { rows: u } = await pool.query<{ id: string }>("insert into app_public.users (email, is_admin) values ('admin@example.com', true) returning id::text");
    const { rows: t } = await pool.query<{ token: string }>("select app_private.create_session($1, interval '1 day') as token", [u[0]!.id]);
    api = await spawnApi(db, password);
    const arrived = new Map<string, number>();
    ws = createClient({ url: `${api.url.replace(/^http/, "ws")}/graphql`, connectionParams: { authorization: `Bearer ${t[0]!.token}` }, lazy: false });
    let failed: unknown = null;
    ws.subscribe<{ jobEvents: { jobKey: string } }>(
      { query: 'subscription { jobEvents(keyPrefix: "bench:") { jobKey } }' },
      {
        next: (r) => {
          if (r.data) arrived.set(r.data.jobEvents.jobKey, Date.now());
        },
        error: (err) => (failed = err),
        complete: () => {},
      },
    );
    // Live once a probe job's event arrives.
    for (let i = 0; !arrived.has(`bench:probe:${i - 1}`); i++) {
      if (failed) throw new Error(`subscription failed: ${JSON.stringify(failed)}`);
      if (i > 200) throw new Error("the subscription never delivered an event");
      await pool.query("select app_private.add_job('send_email', '{}', job_key := $1)", [`bench:probe:${i}`]);
      await new Promise((r) => setTimeout(r, 50));
    }
    const committed = new Map<string, number>();
    const n = EVENTS_PER_SECOND * EVENTS_SECONDS;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const key = `bench:event:${i}`;
      await pool.query("select app_private.add_job('send_email', '{}', job_key := $1)", [key]);
      committed.set(key, Date.now());
      const next = started + ((i + 1) * 1000) / EVENTS_PER_SECOND;
      await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    }
    await h.waitFor(async () => [...committed.keys()].every((k) => arrived.has(k)), 10_000);
    return lateness([...committed].map(([k, at]) => arrived.get(k)! - at));
  } finally {
    await ws?.dispose();
    await api?.stop();
    await pool.end();
    await h.dropBenchDatabase(serverUrl, db.name, db.roles);
  }
}
