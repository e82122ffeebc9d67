// Who sees and may change which offers: row-level security for every role, and guarded
// transitions that refuse with a coded error and write nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asUser, asVisitor, createTestDb, createUser, signIn, refusal, type TestDb } from "../helpers/db.ts";
import { apply, createCompany, createWorker, draftOffer, offer, sentOffer, type Company, type Worker } from "../helpers/offers.ts";

let db: TestDb;
let acme: Company;
let globex: Company;
let wanda: Worker;
let other: Worker;
let admin: { sessionId: string };
beforeAll(async () => {
  db = await createTestDb();
  acme = await createCompany(db, 2);
  globex = await createCompany(db);
  wanda = await createWorker(db);
  other = await createWorker(db);
  const a = await createUser(db, { isAdmin: true });
  admin = await signIn(db, a.id);
});
afterAll(async () => {
  await db?.drop();
});

async function visibleOffers(sessionId: string | null, table = "offers"): Promise<string[]> {
  return asVisitor(db, sessionId, async (c) => (await c.query(`select id::text from app_public.${table} order by id`)).rows.map((r) => r.id));
}

/** Calls a mutation function as a user; returns the error code, or null when it succeeded. */
const attempt = (sessionId: string, sql: string, params: unknown[]) => refusal(db, sessionId, sql, params);

describe("row-level security", () => {
  it("a worker sees only their own offers once sent; members only their company's; another company and anonymous nothing; admins everything", async () => {
    const draft = await draftOffer(db, acme, wanda);
    const sent = await sentOffer(db, acme, wanda);
    const othersOffer = await sentOffer(db, acme, other);

    expect(await visibleOffers(wanda.user.sessionId)).toEqual([sent]);
    expect(await visibleOffers(other.user.sessionId)).toEqual([othersOffer]);
    for (const m of acme.members) expect(await visibleOffers(m.sessionId)).toEqual([draft, sent, othersOffer]);
    expect(await visibleOffers(globex.members[0]!.sessionId)).toEqual([]);
    expect(await visibleOffers(null)).toEqual([]);
    expect(await visibleOffers(admin.sessionId)).toEqual(expect.arrayContaining([draft, sent, othersOffer]));

    // The surrounding records follow the same lines.
    expect(await visibleOffers(globex.members[0]!.sessionId, "job_applications")).toEqual([]);
    expect(await visibleOffers(null, "companies")).toEqual([]);
    expect(await visibleOffers(wanda.user.sessionId, "companies")).toEqual([acme.id]);
    expect(await visibleOffers(globex.members[0]!.sessionId, "workers")).toEqual([]);
    expect(await visibleOffers(acme.members[1]!.sessionId, "workers")).toEqual([wanda.id, other.id]);
  });

  it("nobody writes offers directly; the mutations are the only way in", async () => {
    const id = await sentOffer(db, acme, wanda);
    const refused = [
      [acme.members[0]!.sessionId, "update app_public.offers set status = 'ACCEPTED' where id = $1"],
      [acme.members[0]!.sessionId, "delete from app_public.offers where id = $1"],
      [acme.members[0]!.sessionId, "insert into app_public.offers (application_id, start_date, end_date) select application_id, start_date, end_date from app_public.offers where id = $1"],
      [wanda.user.sessionId, "update app_public.offers set expires_at = now() + interval '1 year' where id = $1"],
    ] as const;
    for (const [session, sql] of refused) {
      await expect(asVisitor(db, session, (c) => c.query(sql, [id]))).rejects.toMatchObject({ code: "42501" });
    }
    expect((await offer(db, id)).status).toBe("SENT");
  });

  it("placements are visible to their worker and company only", async () => {
    const id = await sentOffer(db, acme, other);
    await asUser(db, other.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [id]));
    const { rows } = await db.pool.query("select id::text from app_public.placements where offer_id = $1", [id]);
    const placement = rows[0].id;
    expect(await visibleOffers(other.user.sessionId, "placements")).toContain(placement);
    expect(await visibleOffers(acme.members[1]!.sessionId, "placements")).toContain(placement);
    expect(await visibleOffers(wanda.user.sessionId, "placements")).not.toContain(placement);
    expect(await visibleOffers(globex.members[0]!.sessionId, "placements")).toEqual([]);
  });
});

describe("transitions", () => {
  it("the happy path: create, send, accept — with a placement in the same transaction", async () => {
    const w = await createWorker(db);
    const id = await sentOffer(db, acme, w);
    const accepted = await asUser(db, w.user.sessionId, async (c) => (await c.query("select status, accepted_at from app_public.accept_offer($1)", [id])).rows[0]);
    expect(accepted.status).toBe("ACCEPTED");
    expect(accepted.accepted_at).toBeInstanceOf(Date);
    const { rows } = await db.pool.query(
      "select worker_id::text, company_id::text, start_date::text, end_date::text from app_public.placements where offer_id = $1",
      [id],
    );
    expect(rows).toEqual([{ worker_id: w.id, company_id: acme.id, start_date: "2030-01-06", end_date: "2030-02-28" }]);
  });

  it("a declined offer keeps its reason; a withdrawn one records who and why", async () => {
    const a = await sentOffer(db, acme, await createWorker(db));
    const w = await createWorker(db);
    const b = await sentOffer(db, acme, w);
    await asUser(db, acme.members[1]!.sessionId, (c) => c.query("select app_public.withdraw_offer($1, 'Budget cut')", [a]));
    expect(await offer(db, a)).toMatchObject({ status: "WITHDRAWN", withdrawn_by: acme.members[1]!.id, withdrawal_reason: "Budget cut" });
    await asUser(db, w.user.sessionId, (c) => c.query("select app_public.reject_offer($1, 'RATE_TOO_LOW', 'Need 20% more')", [b]));
    expect(await offer(db, b)).toMatchObject({ status: "REJECTED", rejection_reason: "RATE_TOO_LOW", rejection_reason_description: "Need 20% more" });
  });

  it.each([
    ["another company's member sends it", "globex", "select app_public.send_offer($1)", [], "OFNFD"],
    ["the worker sends it", "worker", "select app_public.send_offer($1)", [], "OFPRM"],
    ["the worker edits it", "worker", "select app_public.update_offer($1, 'x', '2030-01-01', '2030-01-02', 3)", [], "OFPRM"],
    ["a company member accepts it", "member", "select app_public.accept_offer($1)", [], "OFPRM"],
    ["another worker accepts it", "other", "select app_public.accept_offer($1)", [], "OFNFD"],
    ["anonymous accepts it", "anonymous", "select app_public.accept_offer($1)", [], "OFNFD"],
    ["it is sent twice", "member", "select app_public.send_offer($1)", [], "OFDRF"],
    ["it is rejected without a reason", "worker", "select app_public.reject_offer($1, null)", [], "OFRSN"],
    ["it is rejected with an unknown reason", "worker", "select app_public.reject_offer($1, 'BORED')", [], "OFRSN"],
    ["the rejection description is too long", "worker", "select app_public.reject_offer($1, 'OTHER', $2)", ["x".repeat(201)], "OFDSC"],
    ["it is withdrawn without a reason", "member", "select app_public.withdraw_offer($1, '  ')", [], "OFWDR"],
    ["the withdrawal reason is too long", "member", "select app_public.withdraw_offer($1, $2)", ["x".repeat(1501)], "OFWDR"],
    ["its dates are edited backwards", "member", "select app_public.update_offer($1, 'x', '2030-02-01', '2030-01-01', 3)", [], "OFDAT"],
    ["its window is edited to zero days", "member", "select app_public.update_offer($1, 'x', '2030-01-01', '2030-01-02', 0)", [], "OFEXP"],
  ] as const)("a SENT offer is refused with a code, and unchanged, when %s", async (_label, who, sql, extra, code) => {
    const id = await sentOffer(db, acme, await freshWorker());
    const before = await offer(db, id);
    const session = sessionFor(who);
    expect(await attempt(session, sql, [id, ...extra])).toBe(code);
    expect(await offer(db, id)).toEqual(before);
  });

  it("accepting or declining an expired offer is refused (OFEXD), even before the expiry job has run", async () => {
    const w = await createWorker(db);
    const id = await sentOffer(db, acme, w);
    await db.pool.query("update app_public.offers set expires_at = now() - interval '1 second' where id = $1", [id]);
    expect(await attempt(w.user.sessionId, "select app_public.accept_offer($1)", [id])).toBe("OFEXD");
    expect(await attempt(w.user.sessionId, "select app_public.reject_offer($1, 'OTHER')", [id])).toBe("OFEXD");
    expect((await offer(db, id)).status).toBe("SENT");
    expect(await db.pool.query("select 1 from app_public.placements where offer_id = $1", [id])).toMatchObject({ rowCount: 0 });
  });

  it("finished offers cannot be edited, accepted twice or withdrawn", async () => {
    const w = await createWorker(db);
    const id = await sentOffer(db, acme, w);
    await asUser(db, w.user.sessionId, (c) => c.query("select app_public.accept_offer($1)", [id]));
    const m = acme.members[0]!.sessionId;
    expect(await attempt(m, "select app_public.update_offer($1, 'x', '2030-01-01', '2030-01-02', 3)", [id])).toBe("OFFIN");
    expect(await attempt(w.user.sessionId, "select app_public.accept_offer($1)", [id])).toBe("OFSNT");
    expect(await attempt(m, "select app_public.withdraw_offer($1, 'too late')", [id])).toBe("OFSNT");
  });

  it("create_offer: only for one's own company's applications, once per application, with valid dates", async () => {
    const w = await createWorker(db);
    const app = await apply(db, acme.jobId, w.id);
    const m = acme.members[0]!.sessionId;
    expect(await attempt(globex.members[0]!.sessionId, "select app_public.create_offer($1, 'hi', '2030-01-01', '2030-01-02')", [app])).toBe("OFAPP");
    expect(await attempt(m, "select app_public.create_offer($1, 'hi', '2030-01-02', '2030-01-01')", [app])).toBe("OFDAT");
    expect(await attempt(m, "select app_public.create_offer($1, 'hi', '2030-01-01', '2030-01-02', 0)", [app])).toBe("OFEXP");
    expect(await attempt(m, "select app_public.create_offer($1, $2, '2030-01-01', '2030-01-02')", [app, "x".repeat(5001)])).toBe("OFMSG");
    expect(await db.pool.query("select 1 from app_public.offers where application_id = $1", [app])).toMatchObject({ rowCount: 0 });
    expect(await attempt(m, "select app_public.create_offer($1, 'hi', '2030-01-01', '2030-01-02')", [app])).toBeNull();
    expect(await attempt(m, "select app_public.create_offer($1, 'hi', '2030-01-01', '2030-01-02')", [app])).toBe("OFDUP");
  });

  it("a DBA cannot move an offer to another application, company or worker (OFFIX)", async () => {
    const id = await draftOffer(db, acme, await createWorker(db));
    await expect(db.pool.query("update app_public.offers set company_id = $2 where id = $1", [id, globex.id])).rejects.toMatchObject({ code: "OFFIX" });
  });
});

// Each refusal case runs on a fresh offer for a worker of its own, so cases cannot interfere.
let current: Worker;
async function freshWorker(): Promise<Worker> {
  current = await createWorker(db);
  return current;
}
function sessionFor(who: string): string {
  switch (who) {
    case "globex":
      return globex.members[0]!.sessionId;
    case "worker":
      return current.user.sessionId;
    case "member":
      return acme.members[0]!.sessionId;
    case "other":
      return other.user.sessionId;
    default:
      return "";
  }
}
