// Exchange mutations refuse every invalid move with a coded error and write nothing; row-level
// security shows each user only their exchanges.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asUser, asVisitor, createTestDb, createUser, signIn, refusal, type TestDb } from "../helpers/db.ts";
import { createExchange, exchange, inviteCode, person, withParticipants } from "../helpers/exchanges.ts";
import type { Person } from "../helpers/offers.ts";

let db: TestDb;
let organiser: Person;
let guest: Person;
let outsider: Person;
let id: string;
let participantIds: string[];
beforeAll(async () => {
  db = await createTestDb();
  organiser = await person(db);
  guest = await person(db);
  outsider = await person(db);
  id = await createExchange(db, organiser);
  participantIds = await withParticipants(db, organiser, id, [guest, await person(db)]);
});
afterAll(async () => {
  await db?.drop();
});

const attempt = (who: Person | null, sql: string, params: unknown[]) => refusal(db, who?.sessionId ?? null, sql, params);

describe("exchange mutations", () => {
  it.each([
    ["a date in the past", "select app_public.create_exchange('x', '', 10, now() - interval '1 day', 'Europe/Paris')", "EXDAT"],
    ["an unknown time zone", "select app_public.create_exchange('x', '', 10, now() + interval '9 days', 'Mars/Olympus')", "EXTZN"],
    ["reminder days out of range", "select app_public.create_exchange('x', '', 10, now() + interval '9 days', 'UTC', '{0}')", "EXRDY"],
    ["repeated reminder days", "select app_public.create_exchange('x', '', 10, now() + interval '9 days', 'UTC', '{3,3}')", "EXRDY"],
    ["no name", "select app_public.create_exchange('  ', '', 10, now() + interval '9 days', 'UTC')", "EXNAM"],
    ["a negative budget", "select app_public.create_exchange('x', '', -1, now() + interval '9 days', 'UTC')", "EXBDG"],
  ])("create_exchange refuses %s", async (_label, sql, code) => {
    expect(await attempt(organiser, sql, [])).toBe(code);
    expect(await attempt(null, "select app_public.create_exchange('x', '', 1, now() + interval '9 days', 'UTC')", [])).toBe("EXPRM");
  });

  it.each([
    ["someone else edits it", "outsider", "select app_public.update_exchange($1, 'x', '', 1, now() + interval '9 days', 'UTC')", "EXNFD"],
    ["a participant edits it", "guest", "select app_public.set_reminder_days($1, '{2}')", "EXPRM"],
    ["the organiser starts matching while registration is open", "organiser", "select app_public.start_matching($1)", "EXSTA"],
    ["the organiser completes it before it was matched", "organiser", "select app_public.complete_exchange($1)", "EXSTA"],
    ["the organiser moves it into the past", "organiser", "select app_public.update_exchange($1, 'x', '', 1, now() - interval '1 hour', 'UTC')", "EXDAT"],
    ["someone joins without the invite code", "outsider", "select app_public.join_exchange($1, 'Sneaky', 'guessed')", "EXNFD"],
    ["an outsider withdraws", "outsider", "select app_public.withdraw_from_exchange($1)", "EXNPT"],
    ["an outsider turns reminders off", "outsider", "select app_public.set_exchange_reminders($1, false)", "EXNPT"],
  ] as const)("refused with a code when %s, and nothing changes", async (_label, who, sql, code) => {
    const before = await exchange(db, id);
    const actor = { organiser, guest, outsider }[who];
    expect(await attempt(actor, sql, [id])).toBe(code);
    expect(await exchange(db, id)).toEqual(before);
  });

  it("exclusions need two different participants of the exchange", async () => {
    const [a, b] = participantIds;
    expect(await attempt(organiser, "select app_public.add_exclusion($1, $2, $2)", [id, a])).toBe("EXSLF");
    expect(await attempt(organiser, "select app_public.add_exclusion($1, $2, 999999)", [id, a])).toBe("EXPAR");
    expect(await attempt(guest, "select app_public.add_exclusion($1, $2, $3)", [id, a, b])).toBe("EXPRM");
    expect(await attempt(organiser, "select app_public.add_exclusion($1, $2, $3)", [id, b, a])).toBeNull();
    expect(await attempt(organiser, "select app_public.add_exclusion($1, $2, $3)", [id, a, b])).toBeNull();
    const { rows } = await db.pool.query("select count(*)::int as n from app_public.exclusions where exchange_id = $1", [id]);
    expect(rows[0].n).toBe(1);
  });

  it("joining needs the invite code and open registration; joining twice is refused; a withdrawn participant may rejoin", async () => {
    const code = await inviteCode(db, id);
    expect(await attempt(guest, "select app_public.join_exchange($1, 'Again', $2)", [id, code])).toBe("EXJND");
    const late = await person(db);
    await asUser(db, organiser.sessionId, (c) => c.query("select app_public.close_registration($1)", [id]));
    expect(await attempt(late, "select app_public.join_exchange($1, 'Late', $2)", [id, code])).toBe("EXSTA");
    await asUser(db, organiser.sessionId, (c) => c.query("select app_public.open_registration($1)", [id]));
    expect(await attempt(guest, "select app_public.withdraw_from_exchange($1)", [id])).toBeNull();
    expect(await attempt(guest, "select app_public.join_exchange($1, 'Back', $2)", [id, code])).toBeNull();
    const { rows } = await db.pool.query("select display_name, withdrawn_at from app_public.participants where id = $1", [participantIds[0]]);
    expect(rows).toEqual([{ display_name: "Back", withdrawn_at: null }]);
  });

  it("withdrawing while the draw runs is refused (EXSTA), so nobody withdrawn is matched", async () => {
    const org = await person(db);
    const p = await person(db);
    const x = await createExchange(db, org);
    await withParticipants(db, org, x, [p, await person(db)]);
    await db.pool.query("update app_public.exchanges set state = 'MATCHING' where id = $1", [x]);
    expect(await attempt(p, "select app_public.withdraw_from_exchange($1)", [x])).toBe("EXSTA");
    // Someone outside it learns nothing of its state: the same answer as for any exchange.
    expect(await attempt(outsider, "select app_public.withdraw_from_exchange($1)", [x])).toBe("EXNPT");
  });

  it("a DBA cannot give an exchange another organiser (EXFIX) or an unknown zone (EXTZN)", async () => {
    const other = await createUser(db);
    await expect(db.pool.query("update app_public.exchanges set organiser_id = $2 where id = $1", [id, other.id])).rejects.toMatchObject({ code: "EXFIX" });
    await expect(db.pool.query("update app_public.exchanges set timezone = 'Nowhere/Land' where id = $1", [id])).rejects.toMatchObject({ code: "EXTZN" });
  });
});

describe("row-level security", () => {
  it("organiser and participants see the exchange; outsiders and anonymous do not; admins do", async () => {
    const see = async (sessionId: string | null) =>
      asVisitor(db, sessionId, async (c) => (await c.query("select id::text from app_public.exchanges where id = $1", [id])).rows.length);
    expect(await see(organiser.sessionId)).toBe(1);
    expect(await see(guest.sessionId)).toBe(1);
    expect(await see(outsider.sessionId)).toBe(0);
    expect(await see(null)).toBe(0);
    const admin = await createUser(db, { isAdmin: true });
    expect(await see((await signIn(db, admin.id)).sessionId)).toBe(1);
    await asVisitor(db, organiser.sessionId, async (c) => {
      await expect(c.query("update app_public.exchanges set name = 'x' where id = $1", [id])).rejects.toMatchObject({ code: "42501" });
    });
  });
});
