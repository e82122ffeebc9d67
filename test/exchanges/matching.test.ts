// Matching through the real job: MATCHING enqueues exchanges__match, which draws a valid
// assignment and emails each participant theirs exactly once — or, when the exclusions make it
// impossible, puts the exchange back with a notification to the organiser. Each giver sees only
// their own assignment.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { asUser, asVisitor, createTestDb, drainJobs, jobRuns, listJobs, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";
import { createExchange, exchange, person, withParticipants } from "../helpers/exchanges.ts";
import type { Person } from "../helpers/offers.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let smtp: SmtpSink;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  smtp = await startSmtpSink();
});
afterAll(async () => {
  await smtp?.close();
  await db?.drop();
});

const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));

async function run(sessionId: string, sql: string, params: unknown[]) {
  return asUser(db, sessionId, (c) => c.query(sql, params));
}

describe("matching", () => {
  let organiser: Person;
  let people: Person[];
  let ids: string[];
  let id: string;

  it("MATCHING enqueues the match job; the draw honours exclusions and withdrawals, and everyone is emailed once", async () => {
    organiser = await person(db);
    people = [];
    for (let i = 0; i < 6; i++) people.push(await person(db));
    id = await createExchange(db, organiser);
    ids = await withParticipants(db, organiser, id, people);
    await run(people[5]!.sessionId, "select app_public.withdraw_from_exchange($1)", [id]);
    await run(organiser.sessionId, "select app_public.close_registration($1)", [id]);
    await run(organiser.sessionId, "select app_public.add_exclusion($1, $2, $3)", [id, ids[0], ids[1]]);
    await run(organiser.sessionId, "select app_public.add_exclusion($1, $2, $3)", [id, ids[3], ids[2]]);
    await run(organiser.sessionId, "select app_public.start_matching($1)", [id]);
    expect((await listJobs(db)).filter((j) => j.key === `exchanges:${id}:match`)).toHaveLength(1);

    const config = testConfig(db, { SMTP_URL: smtp.url });
    await drainJobs(db, only("exchanges__match", "send_email"), config);
    await drainJobs(db, only("send_email"), config);
    expect((await exchange(db, id)).state).toBe("MATCHED");
    const { rows } = await db.pool.query<{ giver: string; receiver: string }>(
      "select giver_id::text as giver, receiver_id::text as receiver from app_public.matches where exchange_id = $1",
      [id],
    );
    const active = ids.slice(0, 5);
    expect(rows.map((r) => r.giver).sort()).toEqual([...active].sort());
    expect(rows.map((r) => r.receiver).sort()).toEqual([...active].sort());
    const forbidden = new Set([`${ids[0]}>${ids[1]}`, `${ids[1]}>${ids[0]}`, `${ids[2]}>${ids[3]}`, `${ids[3]}>${ids[2]}`]);
    for (const r of rows) {
      expect(r.giver).not.toBe(r.receiver);
      expect(forbidden.has(`${r.giver}>${r.receiver}`)).toBe(false);
    }
    expect(smtp.received.map((m) => m.to).sort()).toEqual(people.slice(0, 5).map((p) => p.email).sort());
    expect(smtp.received[0]!.subject).toBe("Your gift exchange assignment: Office party");

    // The job again (a duplicate): the exchange is no longer MATCHING, nothing is drawn or sent.
    await db.pool.query("select app_private.add_job('exchanges__match', json_build_object('id', $1::bigint))", [id]);
    await drainJobs(db, only("exchanges__match", "send_email"), config);
    expect((await jobRuns(db, "exchanges__match")).map((r) => r.outcome)).toEqual(["succeeded", "skipped"]);
    expect(smtp.received).toHaveLength(5);
  });

  it("each giver sees only their own assignment; the organiser and outsiders see none", async () => {
    for (const [i, p] of people.slice(0, 5).entries()) {
      const seen = await asVisitor(db, p.sessionId, async (c) => (await c.query("select giver_id::text from app_public.matches")).rows);
      expect(seen).toEqual([{ giver_id: ids[i] }]);
    }
    for (const who of [organiser, people[5]!, await person(db)]) {
      expect(await asVisitor(db, who.sessionId, async (c) => (await c.query("select * from app_public.matches")).rows)).toEqual([]);
    }
    // Co-participants' display names are visible (to find one's receiver); exclusions are the organiser's.
    const names = await asVisitor(db, people[0]!.sessionId, async (c) => (await c.query("select count(*)::int as n from app_public.participants")).rows[0].n);
    expect(names).toBe(6);
    expect(await asVisitor(db, people[0]!.sessionId, async (c) => (await c.query("select * from app_public.exclusions")).rows)).toEqual([]);
    expect(await asVisitor(db, organiser.sessionId, async (c) => (await c.query("select * from app_public.exclusions")).rowCount)).toBe(2);
  });

  it("impossible exclusions put the exchange back to REGISTRATION_CLOSED and tell the organiser why", async () => {
    const org = await person(db);
    const [a, b] = [await person(db), await person(db)];
    const x = await createExchange(db, org);
    const [pa, pb] = await withParticipants(db, org, x, [a, b]);
    await run(org.sessionId, "select app_public.close_registration($1)", [x]);
    await run(org.sessionId, "select app_public.add_exclusion($1, $2, $3)", [x, pa, pb]);
    await run(org.sessionId, "select app_public.start_matching($1)", [x]);
    await drainJobs(db, only("exchanges__match"));
    expect((await exchange(db, x)).state).toBe("REGISTRATION_CLOSED");
    expect(await db.pool.query("select 1 from app_public.matches where exchange_id = $1", [x])).toMatchObject({ rowCount: 0 });
    const { rows } = await db.pool.query("select type, title, body from app_public.notifications where user_id = $1", [org.id]);
    expect(rows).toEqual([
      { type: "exchange.matching_failed", title: "Matching failed for Office party", body: expect.stringContaining("No assignment satisfies the exclusions") },
    ]);
    expect((await jobRuns(db, "exchanges__match")).at(-1)).toMatchObject({ outcome: "succeeded", result: { matched: false } });
  });

  it("a DBA's UPDATE to MATCHING enqueues the same job, and the draw runs the same way", async () => {
    const org = await person(db);
    const x = await createExchange(db, org);
    await withParticipants(db, org, x, [await person(db), await person(db), await person(db)]);
    await db.pool.query("update app_public.exchanges set state = 'MATCHING' where id = $1", [x]);
    expect((await listJobs(db)).filter((j) => j.key === `exchanges:${x}:match`)).toHaveLength(1);
    await drainJobs(db, only("exchanges__match"));
    expect((await exchange(db, x)).state).toBe("MATCHED");
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.matches where exchange_id = $1", [x]);
    expect(rows[0].n).toBe(3);
  });
});
