// Gift-exchange factories that go through the real mutation functions as the signed-in user.
import { asUser, type TestDb } from "./db.ts";
import type { Person } from "./offers.ts";

export { person } from "./offers.ts";

export interface ExchangeOptions {
  date?: string;
  timezone?: string;
  reminderDays?: number[];
}

/** An exchange (DRAFT) organised by `organiser`, through app_public.create_exchange. */
export async function createExchange(db: TestDb, organiser: Person, o: ExchangeOptions = {}): Promise<string> {
  return asUser(db, organiser.sessionId, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      "select id::text from app_public.create_exchange('Office party', 'Be nice', 25, $1, $2, $3)",
      [o.date ?? new Date(Date.now() + 30 * 86_400_000).toISOString(), o.timezone ?? "Europe/London", o.reminderDays ?? [7, 3, 1]],
    );
    return rows[0]!.id;
  });
}

/** Opens registration, has each person join with the invite code, and returns their participant ids. */
export async function withParticipants(db: TestDb, organiser: Person, exchangeId: string, people: Person[]): Promise<string[]> {
  const code = await asUser(db, organiser.sessionId, async (c) =>
    (await c.query<{ invite_code: string }>("select invite_code from app_public.open_registration($1)", [exchangeId])).rows[0]!.invite_code);
  const ids: string[] = [];
  for (const [i, p] of people.entries()) {
    ids.push(
      await asUser(db, p.sessionId, async (c) => {
        const { rows } = await c.query<{ id: string }>("select id::text from app_public.join_exchange($1, $2, $3)", [exchangeId, `Person ${i + 1}`, code]);
        return rows[0]!.id;
      }),
    );
  }
  return ids;
}

export async function exchange(db: TestDb, id: string) {
  const { rows } = await db.pool.query(
    "select state, exchange_date, timezone, reminder_days, completed_at, purge_warning_sent_at from app_public.exchanges where id = $1",
    [id],
  );
  return rows[0];
}

/** Queued jobs whose key starts with exchanges:<id>: (key → run_at). */
export async function exchangeJobs(db: TestDb, id: string): Promise<Record<string, { id: string; runAt: Date }>> {
  const { rows } = await db.pool.query<{ id: string; key: string; run_at: Date }>(
    "select id::text, key, run_at from graphile_worker.jobs where key like $1 order by key",
    [`exchanges:${id}:%`],
  );
  return Object.fromEntries(rows.map((r) => [r.key.slice(`exchanges:${id}:`.length), { id: r.id, runAt: r.run_at }]));
}

export async function inviteCode(db: TestDb, id: string): Promise<string> {
  return (await db.pool.query<{ invite_code: string }>("select invite_code from app_public.exchanges where id = $1", [id])).rows[0]!.invite_code;
}
