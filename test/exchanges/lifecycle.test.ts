// After the exchange: completion at its date (job, or the 00:00 sweep), a purge warning once,
// and the purge 30 days after completion (job, or the 02:00 sweep) — exactly the eligible
// exchanges, logged, never a reopened or younger one. State changed by a DBA in plain SQL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { createTestDb, drainJobs, jobRuns, makeJobsDue, type TestDb } from "../helpers/db.ts";
import { createExchange, exchange, exchangeJobs, person, withParticipants } from "../helpers/exchanges.ts";
import type { Person } from "../helpers/offers.ts";

let db: TestDb;
let tasks: ResolvedTask[];
let organiser: Person;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  organiser = await person(db);
});
afterAll(async () => {
  await db?.drop();
});

const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));

/** A matched exchange with three participants, one exclusion and three matches (set up by a DBA). */
async function matchedExchange(): Promise<string> {
  const id = await createExchange(db, organiser);
  const p = await withParticipants(db, organiser, id, [await person(db), await person(db), await person(db)]);
  await db.pool.query("insert into app_public.exclusions (exchange_id, participant_a, participant_b) values ($1, $2, $3)", [id, p[0], p[1]]);
  await db.pool.query(
    "insert into app_public.matches (exchange_id, giver_id, receiver_id) values ($1, $2, $3), ($1, $3, $4), ($1, $4, $2)",
    [id, p[0], p[2], p[1]],
  );
  await db.pool.query("update app_public.exchanges set state = 'MATCHED' where id = $1", [id]);
  return id;
}

/** Completed `days` days ago, as a DBA would record it. */
async function completedDaysAgo(id: string, days: number) {
  await db.pool.query("update app_public.exchanges set state = 'COMPLETED', completed_at = now() - make_interval(days => $2) where id = $1", [id, days]);
}

async function loseJobs(id: string) {
  await db.pool.query("select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs where key like $1))", [`exchanges:${id}:%`]);
}

async function warnings(): Promise<number> {
  const { rows } = await db.pool.query("select count(*)::int as n from app_public.notifications where user_id = $1 and type = 'exchange.purge_warning'", [
    organiser.id,
  ]);
  return rows[0].n;
}

describe("completion", () => {
  it("a matched exchange completes at its date through its own job; then its warning and purge are scheduled", async () => {
    const id = await matchedExchange();
    await db.pool.query("update app_public.exchanges set exchange_date = now() - interval '1 minute' where id = $1", [id]);
    await makeJobsDue(db);
    await drainJobs(db, only("exchanges__complete"));
    const e = await exchange(db, id);
    expect(e.state).toBe("COMPLETED");
    const jobs = await exchangeJobs(db, id);
    expect(Object.keys(jobs).sort()).toEqual(["purge", "purge_warning"]);
    expect(jobs["purge_warning"]!.runAt.getTime() - e.completed_at.getTime()).toBe(23 * 86_400_000);
    expect(jobs["purge"]!.runAt.getTime() - e.completed_at.getTime()).toBe(30 * 86_400_000);
  });

  it("the 00:00 sweep completes matched exchanges past their date whose job was lost, and nothing else", async () => {
    const due = await matchedExchange();
    const later = await matchedExchange();
    await db.pool.query("update app_public.exchanges set exchange_date = now() - interval '1 day' where id = $1", [due]);
    await loseJobs(due);
    await db.pool.query("select app_private.add_job('exchanges__complete_due', '{}')");
    await drainJobs(db, only("exchanges__complete_due"));
    expect((await jobRuns(db, "exchanges__complete_due")).at(-1)).toMatchObject({ outcome: "succeeded", result: { completed: 1, remaining: 0 } });
    expect((await exchange(db, due)).state).toBe("COMPLETED");
    expect((await exchange(db, later)).state).toBe("MATCHED");
  });
});

describe("purge", () => {
  it("over a mixed population, deletes exactly the eligible exchanges, logs matching counts, warns once, and a re-run deletes nothing", async () => {
    await db.pool.query("delete from app_public.exchanges");
    const old1 = await matchedExchange();
    const old2 = await matchedExchange();
    const young = await matchedExchange();
    const reopened = await matchedExchange();
    const stillMatched = await matchedExchange();
    await completedDaysAgo(old1, 31);
    await completedDaysAgo(old2, 45);
    await completedDaysAgo(young, 25);
    await completedDaysAgo(reopened, 40);
    await db.pool.query("update app_public.exchanges set state = 'REGISTRATION_CLOSED' where id = $1", [reopened]);
    expect(await exchange(db, reopened)).toMatchObject({ completed_at: null });
    // The sweep is the only path here: the jobs scheduled on completion are lost.
    for (const id of [old1, old2, young, reopened, stillMatched]) await loseJobs(id);

    for (let i = 0; i < 2; i++) {
      await db.pool.query("select app_private.add_job('exchanges__purge_due', '{}')");
      await drainJobs(db, only("exchanges__purge_due"));
    }
    expect((await jobRuns(db, "exchanges__purge_due")).map((r) => r.result)).toEqual([
      { warned: 3, purged: 2, remaining: 0 },
      { warned: 0, purged: 0, remaining: 0 },
    ]);
    const { rows: left } = await db.pool.query("select id::text from app_public.exchanges order by id");
    expect(left.map((r) => r.id)).toEqual([young, reopened, stillMatched]);
    for (const table of ["participants", "exclusions", "matches"]) {
      const { rows } = await db.pool.query(`select count(*)::int as n from app_public.${table} where exchange_id = any($1::bigint[])`, [[old1, old2]]);
      expect(rows[0].n).toBe(0);
    }
    const { rows: log } = await db.pool.query(
      "select exchange_id::text, participants, exclusions, matches from app_public.exchange_purges order by exchange_id",
    );
    expect(log).toEqual([
      { exchange_id: old1, participants: 3, exclusions: 1, matches: 3 },
      { exchange_id: old2, participants: 3, exclusions: 1, matches: 3 },
    ]);
    // Warned: the two purged and the 25-day-old one; once each.
    expect(await warnings()).toBe(3);
    expect((await exchange(db, young)).purge_warning_sent_at).toBeInstanceOf(Date);
  });

  it("an exchange with a 200-character name is warned (its title shortened), and the sweep goes on to the others", async () => {
    await db.pool.query("delete from app_public.exchanges");
    const long = await matchedExchange();
    const other = await matchedExchange();
    await db.pool.query("update app_public.exchanges set name = $2 where id = $1", [long, "N".repeat(200)]);
    await completedDaysAgo(long, 25);
    await completedDaysAgo(other, 31);
    for (const id of [long, other]) await loseJobs(id);
    const before = await warnings();
    await db.pool.query("select app_private.add_job('exchanges__purge_due', '{}')");
    await drainJobs(db, only("exchanges__purge_due"));
    expect((await jobRuns(db, "exchanges__purge_due")).at(-1)).toMatchObject({ outcome: "succeeded", result: { warned: 2, purged: 1, remaining: 0 } });
    expect(await warnings()).toBe(before + 2);
    const { rows } = await db.pool.query("select title from app_public.notifications where data->>'exchangeId' = $1", [long]);
    expect(rows).toEqual([{ title: `${"N".repeat(199)}…` }]);
    expect(await exchange(db, other)).toBeUndefined();
  });

  it("an exchange reopened and completed again is warned again, in the app and by email", async () => {
    const id = await matchedExchange();
    await completedDaysAgo(id, 25);
    expect((await db.pool.query("select app_private.send_exchange_purge_warning($1) as warned", [id])).rows[0].warned).toBe(true);
    await db.pool.query("update app_public.exchanges set state = 'MATCHED' where id = $1", [id]);
    await completedDaysAgo(id, 24);
    expect((await db.pool.query("select app_private.send_exchange_purge_warning($1) as warned", [id])).rows[0].warned).toBe(true);
    const { rows: shown } = await db.pool.query("select count(*)::int as n from app_public.notifications where data->>'exchangeId' = $1", [id]);
    expect(shown[0].n).toBe(2);
    const { rows: mails } = await db.pool.query(
      "select count(*)::int as n from app_private.email_deliveries where template = 'notification' and key like $1",
      [`notification:exchange:${id}:purge_warning%`],
    );
    expect(mails[0].n).toBe(2);
    await loseJobs(id);
  });

  it("the scheduled jobs do the same for one exchange: warning once at +23 days, purge at +30 days", async () => {
    const id = await matchedExchange();
    await completedDaysAgo(id, 31);
    const before = await warnings();
    await makeJobsDue(db);
    await drainJobs(db, only("exchanges__send_purge_warning"));
    await db.pool.query("select app_private.add_job('exchanges__send_purge_warning', json_build_object('id', $1::bigint))", [id]);
    await drainJobs(db, only("exchanges__send_purge_warning"));
    expect(await warnings()).toBe(before + 1);
    expect((await jobRuns(db, "exchanges__send_purge_warning")).map((r) => r.outcome)).toEqual(["succeeded", "skipped"]);
    await drainJobs(db, only("exchanges__purge"));
    expect(await exchange(db, id)).toBeUndefined();
    expect((await jobRuns(db, "exchanges__purge")).at(-1)).toMatchObject({ outcome: "succeeded", result: { purged: true } });
  });

  it("a purge job for an exchange that was reopened, or is younger than 30 days, deletes nothing", async () => {
    const reopened = await matchedExchange();
    await completedDaysAgo(reopened, 40);
    await db.pool.query("update app_public.exchanges set state = 'MATCHED' where id = $1", [reopened]);
    const young = await matchedExchange();
    await completedDaysAgo(young, 5);
    for (const id of [reopened, young]) {
      await db.pool.query("select app_private.add_job('exchanges__purge', json_build_object('id', $1::bigint))", [id]);
    }
    await drainJobs(db, only("exchanges__purge"));
    expect((await jobRuns(db, "exchanges__purge")).slice(-2).map((r) => r.outcome)).toEqual(["skipped", "skipped"]);
    expect((await exchange(db, reopened)).state).toBe("MATCHED");
    expect((await exchange(db, young)).state).toBe("COMPLETED");
  });
});

describe("jobs run before their time (an admin's retryJob or rescheduleJob)", () => {
  it("completion, purge warning and purge jobs run before their time go back to it, and do nothing", async () => {
    const id = await matchedExchange();
    await db.pool.query("update app_public.exchanges set exchange_date = now() + interval '2 days' where id = $1", [id]);
    const early = async (purpose: string, task: string) => {
      const before = (await exchangeJobs(db, id))[purpose]!.runAt;
      await db.pool.query("select graphile_worker.reschedule_jobs(array(select id from graphile_worker.jobs where key = $1), run_at := now())", [
        `exchanges:${id}:${purpose}`,
      ]);
      await drainJobs(db, only(task));
      expect((await jobRuns(db, task)).at(-1)).toMatchObject({ outcome: "skipped", result: { skipped: expect.stringContaining("put back") } });
      expect((await exchangeJobs(db, id))[purpose]!.runAt).toEqual(before);
    };
    await early("complete", "exchanges__complete");
    expect((await exchange(db, id)).state).toBe("MATCHED");
    await completedDaysAgo(id, 1);
    await early("purge_warning", "exchanges__send_purge_warning");
    await early("purge", "exchanges__purge");
    expect(await exchange(db, id)).toMatchObject({ state: "COMPLETED", purge_warning_sent_at: null });
  });
});
