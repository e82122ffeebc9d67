// The offers API as GraphQL clients use it: mutations with coded errors, and aggregates for a
// company dashboard, all under the same row-level security.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { createTestDb, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { createCompany, createWorker, draftOffer, offer, sentOffer, type Company } from "../helpers/offers.ts";

let db: TestDb;
let api: ApiHandle;
let acme: Company;
beforeAll(async () => {
  db = await createTestDb();
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: testLog, health: { workerRunning: () => null } });
  acme = await createCompany(db);
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
});

async function gql(query: string, token: string | null, variables?: Record<string, unknown>) {
  const res = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await res.json()) as { data?: any; errors?: { message: string; extensions?: { code?: string } }[] };
}

describe("offers over GraphQL", () => {
  it("a company member sends and the worker accepts, through mutations", async () => {
    const w = await createWorker(db);
    const id = await draftOffer(db, acme, w);
    const sent = await gql(
      "mutation($id: BigInt!) { sendOffer(input: {offerId: $id}) { result { status expiresAt } } }",
      acme.members[0]!.token,
      { id },
    );
    expect(sent.errors).toBeUndefined();
    expect(sent.data.sendOffer.result.status).toBe("SENT");
    const accepted = await gql(
      "mutation($id: BigInt!) { acceptOffer(input: {offerId: $id}) { result { status acceptedAt placementByOfferId { startDate endDate } } } }",
      w.user.token,
      { id },
    );
    expect(accepted.errors).toBeUndefined();
    expect(accepted.data.acceptOffer.result).toMatchObject({
      status: "ACCEPTED",
      placementByOfferId: { startDate: "2030-01-06", endDate: "2030-02-28" },
    });
  });

  it("an invalid move is a clear error with its code, and writes nothing", async () => {
    const w = await createWorker(db);
    const id = await sentOffer(db, acme, w);
    await db.pool.query("update app_public.offers set expires_at = now() - interval '1 minute' where id = $1", [id]);
    const r = await gql("mutation($id: BigInt!) { acceptOffer(input: {offerId: $id}) { result { status } } }", w.user.token, { id });
    expect(r.errors).toEqual([expect.objectContaining({ message: `Offer ${id} has expired`, extensions: expect.objectContaining({ code: "OFEXD" }) })]);
    expect((await offer(db, id)).status).toBe("SENT");

    const noReason = await gql("mutation($id: BigInt!) { rejectOffer(input: {offerId: $id}) { result { status } } }", w.user.token, { id });
    expect(noReason.errors?.[0]?.extensions?.code).toBe("OFEXD");
    const other = await createWorker(db);
    const fresh = await sentOffer(db, acme, other);
    const r2 = await gql("mutation($id: BigInt!) { rejectOffer(input: {offerId: $id}) { result { status } } }", other.user.token, { id: fresh });
    expect(r2.errors?.[0]?.extensions?.code).toBe("OFRSN");
    const r3 = await gql("mutation($id: BigInt!) { withdrawOffer(input: {offerId: $id, reason: \"x\"}) { result { status } } }", other.user.token, { id: fresh });
    expect(r3.errors?.[0]?.extensions?.code).toBe("OFPRM");
    expect((await offer(db, fresh)).status).toBe("SENT");
  });

  it("a company dashboard: offers grouped by status, and the average time to accept — its own company only", async () => {
    const dash = await createCompany(db);
    const rival = await createCompany(db);
    await sentOffer(db, rival, await createWorker(db));
    const accepted = [];
    for (const hours of [1, 3]) {
      const id = await sentOffer(db, dash, await createWorker(db));
      await db.pool.query(
        "update app_public.offers set status = 'ACCEPTED', accepted_at = sent_at + make_interval(hours => $2) where id = $1",
        [id, hours],
      );
      accepted.push(id);
    }
    await sentOffer(db, dash, await createWorker(db));
    await draftOffer(db, dash, await createWorker(db));
    const r = await gql(
      `{ allOffers {
           totalCount
           groupedAggregates(groupBy: STATUS) { keys distinctCount { rowId } }
           aggregates { average { timeToAccept } max { timeToAccept } }
         } }`,
      dash.members[0]!.token,
    );
    expect(r.errors).toBeUndefined();
    const groups = Object.fromEntries(r.data.allOffers.groupedAggregates.map((g: any) => [g.keys[0], Number(g.distinctCount.rowId)]));
    expect(groups).toEqual({ ACCEPTED: 2, SENT: 1, DRAFT: 1 });
    expect(r.data.allOffers.totalCount).toBe(4);
    expect(r.data.allOffers.aggregates.average.timeToAccept).toBeCloseTo(2 * 3600, 3);
    expect(r.data.allOffers.aggregates.max.timeToAccept).toBeCloseTo(3 * 3600, 3);

    const anonymous = await gql("{ allOffers { totalCount } }", null);
    expect(anonymous.data.allOffers.totalCount).toBe(0);
  });
});
