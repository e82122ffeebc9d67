// Marketplace factories: companies with signed-in members, workers with (or without) a linked
// user, applications, and offers drafted through the real create_offer mutation function.
import { randomBytes } from "node:crypto";
import { asUser, createUser, signIn, type TestDb } from "./db.ts";

export interface Person {
  id: string;
  email: string;
  sessionId: string;
  token: string;
}

export async function person(db: TestDb): Promise<Person> {
  const u = await createUser(db);
  return { ...u, ...(await signIn(db, u.id)) };
}

export interface Company {
  id: string;
  jobId: string;
  members: Person[];
}

export async function createCompany(db: TestDb, members = 1): Promise<Company> {
  const name = `Company ${randomBytes(3).toString("hex")}`;
  const { rows } = await db.pool.query<{ id: string }>("insert into app_public.companies (name) values ($1) returning id::text", [name]);
  const id = rows[0]!.id;
  const people: Person[] = [];
  for (let i = 0; i < members; i++) {
    const p = await person(db);
    await db.pool.query("insert into app_public.company_members (company_id, user_id) values ($1, $2)", [id, p.id]);
    people.push(p);
  }
  const { rows: job } = await db.pool.query<{ id: string }>(
    "insert into app_public.jobs (company_id, title) values ($1, 'Night shift welder') returning id::text",
    [id],
  );
  return { id, jobId: job[0]!.id, members: people };
}

export interface Worker {
  id: string;
  user: Person;
}

export async function createWorker(db: TestDb): Promise<Worker> {
  const user = await person(db);
  const { rows } = await db.pool.query<{ id: string }>(
    "insert into app_public.workers (user_id, name) values ($1, 'Wanda Worker') returning id::text",
    [user.id],
  );
  return { id: rows[0]!.id, user };
}

export async function apply(db: TestDb, jobId: string, workerId: string): Promise<string> {
  const { rows } = await db.pool.query<{ id: string }>(
    "insert into app_public.job_applications (job_id, worker_id) values ($1, $2) returning id::text",
    [jobId, workerId],
  );
  return rows[0]!.id;
}

/** A job posting of the company (one worker applies once per job). */
export async function createJob(db: TestDb, company: Company): Promise<string> {
  const { rows } = await db.pool.query<{ id: string }>("insert into app_public.jobs (company_id, title) values ($1, 'Day shift rigger') returning id::text", [
    company.id,
  ]);
  return rows[0]!.id;
}

/** A draft offer (for a new job posting) created by the company's first member through app_public.create_offer. */
export async function draftOffer(db: TestDb, company: Company, worker: Worker, expirationDays = 7): Promise<string> {
  const applicationId = await apply(db, await createJob(db, company), worker.id);
  return asUser(db, company.members[0]!.sessionId, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      "select id::text from app_public.create_offer($1, 'Join us', '2030-01-06', '2030-02-28', $2)",
      [applicationId, expirationDays],
    );
    return rows[0]!.id;
  });
}

/** A sent offer: drafted, then sent through app_public.send_offer. */
export async function sentOffer(db: TestDb, company: Company, worker: Worker, expirationDays = 7): Promise<string> {
  const id = await draftOffer(db, company, worker, expirationDays);
  await asUser(db, company.members[0]!.sessionId, (c) => c.query("select app_public.send_offer($1)", [id]));
  return id;
}

export async function offer(db: TestDb, id: string) {
  const { rows } = await db.pool.query(
    `select status, is_read, sent_at, expires_at, accepted_at, rejected_at, expired_at, withdrawn_at, withdrawn_by::text,
            rejection_reason, rejection_reason_description, withdrawal_reason
     from app_public.offers where id = $1`,
    [id],
  );
  return rows[0];
}

/** Queued jobs of one offer's expiry key. */
export async function expiryJobs(db: TestDb, id: string) {
  const { rows } = await db.pool.query<{ id: string; run_at: Date; locked_at: Date | null }>(
    "select id::text, run_at, locked_at from graphile_worker.jobs where key = $1",
    [`offers:${id}:expire`],
  );
  return rows;
}
