// The outbox end to end on real Postgres and a loopback receiver: events, deliveries and jobs
// commit with the change (or not at all), only the audience's endpoints receive them, every
// delivery gets through a flaky receiver with one webhook-id per event, the retry schedule and
// the 410 / 429 / 3xx rules hold on controlled time, and the sweeps re-find and clean up.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, asVisitor, createTestDb, createUser, drainJobs, jobRuns, makeJobsDue, signIn, testConfig, type TestDb } from "../helpers/db.ts";
import { createCompany, createWorker, draftOffer, person, sentOffer, type Company, type Person } from "../helpers/offers.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let server: http.Server;
let hookUrl: string;
let acme: Company;
const received: { id: string; body: string; headers: http.IncomingHttpHeaders }[] = [];
let answer: (id: string, seen: number) => { status: number; headers?: Record<string, string> } = () => ({ status: 200 });

beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  const seen = new Map<string, number>();
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const id = String(req.headers["webhook-id"]);
      seen.set(id, (seen.get(id) ?? 0) + 1);
      received.push({ id, body, headers: req.headers });
      const a = answer(id, seen.get(id)!);
      res.writeHead(a.status, a.headers).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  hookUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  acme = await createCompany(db);
});
afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await db?.drop();
});

const config = () => testConfig(db, { WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8" });
const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));

async function endpoint(owner: Person, topics: string[]): Promise<{ id: string; secret: string }> {
  return asUser(db, owner.sessionId, async (c) => {
    const { rows } = await c.query("select endpoint_id::text as id, secret from app_public.create_webhook_endpoint($1, $2)", [hookUrl, topics]);
    return rows[0];
  });
}

async function deliveries(endpointId: string) {
  const { rows } = await db.pool.query(
    "select id::text, status, attempts, next_attempt_at, last_status_code from app_public.webhook_deliveries where endpoint_id = $1 order by id",
    [endpointId],
  );
  return rows;
}

/** Runs delivery jobs, making retries due each round, until nothing is pending (time through data). */
async function deliverAll(rounds = 10) {
  for (let i = 0; i < rounds; i++) {
    await drainJobs(db, only("webhooks__deliver"), config());
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.webhook_deliveries where status = 'pending'");
    if (rows[0].n === 0) return;
    await makeJobsDue(db);
  }
}

describe("emitting", () => {
  it("a state change writes its event, delivery and job in the same transaction; a rolled-back change writes nothing", async () => {
    const member = acme.members[0]!;
    const ep = await endpoint(member, ["offer.sent"]);
    const w = await createWorker(db);
    const id = await draftOffer(db, acme, w);
    await expect(
      asUser(db, member.sessionId, async (c) => {
        await c.query("select app_public.send_offer($1)", [id]);
        throw new Error("rolled back");
      }),
    ).rejects.toThrow("rolled back");
    expect(await deliveries(ep.id)).toEqual([]);
    await asUser(db, member.sessionId, (c) => c.query("select app_public.send_offer($1)", [id]));
    const [d] = await deliveries(ep.id);
    expect(d).toMatchObject({ status: "pending", attempts: 0 });
    const { rows: jobs } = await db.pool.query("select key from graphile_worker.jobs where key = $1", [`webhook_deliveries:${d.id}:deliver`]);
    expect(jobs).toHaveLength(1);

    await deliverAll();
    expect(await deliveries(ep.id)).toMatchObject([{ status: "delivered", attempts: 1, last_status_code: 200 }]);
    const got = received.at(-1)!;
    const event = new Webhook(ep.secret).verify(got.body, got.headers as Record<string, string>) as { type: string; data: Record<string, unknown> };
    expect(event).toMatchObject({ type: "offer.sent", data: { offerId: Number(id), status: "SENT", companyId: Number(acme.id) } });
    await db.pool.query("delete from app_public.webhook_endpoints where id = $1", [ep.id]);
  });

  it("only endpoints of the event's audience (or of admins) receive it", async () => {
    const stranger = await endpoint(await person(db), ["offer.accepted"]);
    const adminUser = await createUser(db, { isAdmin: true });
    const admin = await endpoint({ ...adminUser, ...(await signIn(db, adminUser.id)) }, ["offer.accepted"]);
    const w = await createWorker(db);
    const workerEp = await endpoint(w.user, ["offer.accepted"]);
    const id = await sentOffer(db, acme, w);
    await asUser(db, w.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [id]));
    expect(await deliveries(stranger.id)).toEqual([]);
    expect(await deliveries(admin.id)).toHaveLength(1);
    expect(await deliveries(workerEp.id)).toHaveLength(1);
    // Owners see their own endpoints and deliveries; the secret is nowhere they can read.
    await asVisitor(db, w.user.sessionId, async (c) => {
      expect((await c.query("select id::text from app_public.webhook_endpoints")).rows).toEqual([{ id: workerEp.id }]);
      expect((await c.query("select count(*)::int as n from app_public.webhook_deliveries")).rows[0].n).toBe(1);
      await expect(c.query("select * from app_private.webhook_secrets")).rejects.toMatchObject({ code: "42501" });
    });
    await db.pool.query("delete from app_public.webhook_endpoints");
  });
});

describe("delivering", () => {
  // 2,000 HTTP attempts made one at a time (runOnce): about 15 s on a quiet machine, twice that on
  // a busy one, hence its own time limit.
  it("1,000 events through a receiver that fails half the time: all delivered, repeats only with the same webhook-id and body", { timeout: 90_000 }, async () => {
    const owner = acme.members[0]!;
    const ep = await endpoint(owner, ["offer.expired"]);
    await db.pool.query(
      `select app_private.emit_events('offer.expired',
         array(select jsonb_build_object('offerId', g) from generate_series(1, 1000) g),
         array(select 'bulk-test:' || g from generate_series(1, 1000) g),
         array(select jsonb_build_array($1::bigint) from generate_series(1, 1000) g))`,
      [owner.id],
    );
    const before = received.length;
    answer = (_id, seen) => ({ status: seen === 1 ? 500 : 204 }); // every message fails once, then succeeds
    await deliverAll();
    answer = () => ({ status: 200 });
    const rows = await deliveries(ep.id);
    expect(rows).toHaveLength(1000);
    expect(rows.every((r) => r.status === "delivered" && r.attempts === 2)).toBe(true);
    const got = received.slice(before);
    expect(got).toHaveLength(2000);
    const bodies = new Map<string, Set<string>>();
    for (const r of got) bodies.set(r.id, (bodies.get(r.id) ?? new Set()).add(r.body));
    expect(bodies.size).toBe(1000);
    expect([...bodies.values()].every((b) => b.size === 1)).toBe(true);
    await db.pool.query("delete from app_public.webhook_endpoints where id = $1", [ep.id]);
  });
});

describe("the retry rules, on controlled time", () => {
  async function pendingDelivery(): Promise<{ id: string; endpointId: string }> {
    const owner = acme.members[0]!;
    // One live endpoint at a time, so that each test's jobs are its own.
    await db.pool.query("update app_public.webhook_endpoints set active = false");
    const ep = await endpoint(owner, ["exchange.completed"]);
    await db.pool.query(
      "select app_private.emit_events('exchange.completed', array['{}'::jsonb], array[$1], array[jsonb_build_array($2::bigint)])",
      [`retry-test:${ep.id}`, owner.id],
    );
    const [d] = await deliveries(ep.id);
    return { id: d.id, endpointId: ep.id };
  }
  const record = (id: string, attempt: number, status: number | null, retryAfter: number | null = null) =>
    db.pool.query("select app_private.record_webhook_attempt($1, $2, $3, 'x', 5, $4) as outcome", [id, attempt, status, retryAfter]).then((r) => r.rows[0].outcome);
  const wait = async (id: string) => {
    const { rows } = await db.pool.query(
      `select extract(epoch from d.next_attempt_at - now()) as secs, j.run_at = d.next_attempt_at as job_matches
       from app_public.webhook_deliveries d left join graphile_worker.jobs j on j.key = 'webhook_deliveries:' || d.id || ':deliver'
       where d.id = $1`,
      [id],
    );
    return { secs: Math.round(Number(rows[0].secs)), jobMatches: rows[0].job_matches };
  };

  it("5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then failed; a 3xx is a failure like any other", async () => {
    const d = await pendingDelivery();
    const expected = [5, 300, 1800, 7200, 18000, 36000, 36000];
    for (const [i, secs] of expected.entries()) {
      expect(await record(d.id, i + 1, i === 0 ? 302 : 500)).toBe("retry");
      expect(await wait(d.id)).toEqual({ secs, jobMatches: true });
    }
    expect(await record(d.id, 8, 500)).toBe("failed");
    expect(await deliveries(d.endpointId)).toMatchObject([{ status: "failed", attempts: 8, next_attempt_at: null }]);
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.webhook_attempts where delivery_id = $1", [d.id]);
    expect(rows[0].n).toBe(8);
  });

  it("429 and 503 wait for Retry-After; 410 fails the delivery and disables the endpoint", async () => {
    const a = await pendingDelivery();
    expect(await record(a.id, 1, 429, 120)).toBe("retry");
    expect((await wait(a.id)).secs).toBe(120);
    expect(await record(a.id, 2, 503, 7)).toBe("retry");
    expect((await wait(a.id)).secs).toBe(7);
    const b = await pendingDelivery();
    expect(await record(b.id, 1, 410)).toBe("failed");
    const { rows } = await db.pool.query("select active, disabled_reason from app_public.webhook_endpoints where id = $1", [b.endpointId]);
    expect(rows).toEqual([{ active: false, disabled_reason: "The endpoint answered 410 Gone" }]);
  });

  it("over HTTP: a 429 with Retry-After is honoured, and a replay delivers the event again under the same id", async () => {
    const d = await pendingDelivery();
    answer = () => ({ status: 429, headers: { "retry-after": "90" } });
    await drainJobs(db, only("webhooks__deliver"), config());
    expect((await wait(d.id)).secs).toBe(90);
    answer = () => ({ status: 200 });
    await makeJobsDue(db);
    await drainJobs(db, only("webhooks__deliver"), config());
    expect(await deliveries(d.endpointId)).toMatchObject([{ status: "delivered", attempts: 2 }]);
    const { rows } = await db.pool.query("select event_id::text from app_public.webhook_deliveries where id = $1", [d.id]);
    const owner = acme.members[0]!;
    expect(await asUser(db, owner.sessionId, async (c) => (await c.query("select app_public.replay_event($1) as n", [rows[0].event_id])).rows[0].n)).toBe(1);
    const before = received.length;
    await drainJobs(db, only("webhooks__deliver"), config());
    expect(received.slice(before).map((r) => r.id)).toEqual([`msg_${rows[0].event_id}`]);
  });
});

describe("secrets and sweeps", () => {
  it("a rotated secret signs alongside the new one until the overlap ends", async () => {
    const owner = acme.members[0]!;
    const ep = await endpoint(owner, ["exchange.matched"]);
    const rotated = await asUser(db, owner.sessionId, async (c) =>
      (await c.query("select secret from app_public.rotate_webhook_secret($1, 1)", [ep.id])).rows[0].secret as string);
    await db.pool.query("select app_private.emit_events('exchange.matched', array['{}'::jsonb], array['rotation'], array[jsonb_build_array($1::bigint)])", [owner.id]);
    const before = received.length;
    await deliverAll();
    const got = received.slice(before)[0]!;
    for (const secret of [ep.secret, rotated]) expect(new Webhook(secret).verify(got.body, got.headers as Record<string, string>)).toEqual(expect.objectContaining({ type: "exchange.matched" }));
    await db.pool.query("update app_private.webhook_secrets set expires_at = now() - interval '1 second' where secret = $1", [ep.secret]);
    const { rows } = await db.pool.query("select secrets from app_private.webhook_delivery_request((select max(id) from app_public.webhook_deliveries))");
    expect(rows[0].secrets).toEqual([rotated]);
  });

  it("the 5-minute sweep re-enqueues pending deliveries whose job was lost or failed for good; the 6-hour cleanup deletes only old ended events", async () => {
    const owner = acme.members[0]!;
    const ep = await endpoint(owner, ["offer.withdrawn"]);
    await db.pool.query("select app_private.emit_events('offer.withdrawn', array['{}'::jsonb, '{}'::jsonb], array['s1', 's2'], array[jsonb_build_array($1::bigint), jsonb_build_array($1::bigint)])", [owner.id]);
    const [lost, kept] = await deliveries(ep.id);
    await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where key = $1))", [`webhook_deliveries:${lost.id}:deliver`]);
    await db.pool.query("update app_public.webhook_deliveries set next_attempt_at = now() - interval '10 minutes' where id = any($1::bigint[])", [[lost.id, kept.id]]);
    // kept's job failed for good (say, the worker hit its time limit ten times): it counts as lost too.
    await db.pool.query("select graphile_worker.permanently_fail_jobs(array(select id from graphile_worker.jobs where key = $1), 'gave up')", [
      `webhook_deliveries:${kept.id}:deliver`,
    ]);
    await db.pool.query("select app_private.add_job('webhook_deliveries__sweep', '{}')");
    await drainJobs(db, only("webhook_deliveries__sweep"));
    expect((await jobRuns(db, "webhook_deliveries__sweep")).at(-1)).toMatchObject({ result: { requeued: 2, remaining: 0 } });
    await deliverAll();

    // Both old; s2's delivery is still pending (say, a retry), so s2 must stay.
    await db.pool.query("update app_public.outbox_events set created_at = now() - interval '200 hours' where idempotency_key in ('s1', 's2')");
    await db.pool.query("update app_public.webhook_deliveries set status = 'pending' where id = $1", [kept.id]);
    await db.pool.query("select app_private.add_job('outbox_events__cleanup', '{}')");
    await drainJobs(db, only("outbox_events__cleanup"), config());
    expect((await jobRuns(db, "outbox_events__cleanup")).at(-1)).toMatchObject({ result: { deleted: 1, remaining: 0 } });
    const { rows } = await db.pool.query("select idempotency_key from app_public.outbox_events where idempotency_key in ('s1', 's2') order by 1");
    expect(rows.map((r) => r.idempotency_key)).toEqual(["s2"]);
  });
});
