// Magic-link login end to end: GraphQL request -> job -> email on a real SMTP server -> login.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { createTestDb, drainJobs, listJobs, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";

let db: TestDb;
let api: ApiHandle;
let smtp: SmtpSink;
let tasks: ResolvedTask[];
const logLines: string[] = [];
const captureLog = createLogger({ level: "debug", format: "json", write: (l) => logLines.push(l) });

beforeAll(async () => {
  db = await createTestDb();
  smtp = await startSmtpSink();
  tasks = await loadTasks();
  api = await startApi({ authUrl: db.authUrl, config: testConfig(db), log: captureLog, health: { workerRunning: () => null } });
});
afterAll(async () => {
  await api?.stop();
  await smtp?.close();
  await db?.drop();
});
beforeEach(async () => {
  await db.pool.query("delete from app_private.rate_limits");
});

async function gql(query: string, variables?: Record<string, unknown>, token?: string) {
  const res = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: (await res.json()) as { data?: any; errors?: { message: string; extensions?: { code?: string } }[] } };
}

const REQUEST = "mutation($email: String!) { requestLoginLink(input: {email: $email}) { result } }";
const LOGIN = "mutation($token: String!) { login(input: {token: $token}) { result } }";

/** Requests a link and runs the queue; returns the token from the email that arrived. */
async function linkFor(email: string): Promise<string> {
  const before = smtp.received.length;
  expect((await gql(REQUEST, { email })).body).toEqual({ data: { requestLoginLink: { result: true } } });
  await drainJobs(db, tasks, testConfig(db, { SMTP_URL: smtp.url, APP_URL: "https://app.example.com" }), captureLog);
  const mail = smtp.received.slice(before).find((m) => m.to === email.toLowerCase());
  expect(mail, `an email to ${email}`).toBeDefined();
  const token = /https:\/\/app\.example\.com\/login\?token=([A-Za-z0-9_-]{43})/.exec(mail!.text)?.[1];
  expect(token).toBeDefined();
  return token!;
}

describe("magic-link login", () => {
  it("emails a link whose token signs in once, returning a working session token", async () => {
    const token = await linkFor("Ada@Example.com");
    const first = await gql(LOGIN, { token });
    const session = first.body.data.login.result as string;
    expect(session).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect((await gql("{ currentUser { email } }", undefined, session)).body.data.currentUser).toEqual({ email: "ada@example.com" });
    const again = await gql(LOGIN, { token });
    expect(again.body.errors?.[0]).toMatchObject({ message: "This sign-in link is invalid, used or expired", extensions: { code: "LOGIN" } });
    // logout ends the session: the token is refused afterwards.
    expect((await gql("mutation { logout(input: {}) { result } }", undefined, session)).body.data.logout.result).toBe(true);
    expect((await gql("{ currentUser { email } }", undefined, session)).status).toBe(401);
  });

  it("one of 50 concurrent sign-ins with the same token wins", async () => {
    const token = await linkFor("race@example.com");
    const results = await Promise.all(Array.from({ length: 50 }, () => gql(LOGIN, { token })));
    const won = results.filter((r) => r.body.data?.login?.result);
    const lost = results.filter((r) => r.body.errors?.[0]?.extensions?.code === "LOGIN");
    expect([won.length, lost.length]).toEqual([1, 49]);
  });

  it("a token lasts 15 minutes; an expired one is refused", async () => {
    const token = await linkFor("late@example.com");
    const { rows } = await db.pool.query(
      `select extract(epoch from t.expires_at - t.created_at)::int as seconds from app_private.magic_tokens t
       join app_public.users u on u.id = t.user_id where u.email = 'late@example.com' and t.used_at is null`,
    );
    expect(rows).toEqual([{ seconds: 900 }]);
    await db.pool.query(
      "update app_private.magic_tokens set expires_at = now() - interval '1 second' where user_id = (select id from app_public.users where email = 'late@example.com')",
    );
    expect((await gql(LOGIN, { token })).body.errors?.[0]?.extensions?.code).toBe("LOGIN");
  });

  it("a new link invalidates the user's older unused one", async () => {
    const older = await linkFor("twice@example.com");
    const newer = await linkFor("twice@example.com");
    expect((await gql(LOGIN, { token: older })).body.errors?.[0]?.extensions?.code).toBe("LOGIN");
    expect((await gql(LOGIN, { token: newer })).body.data.login.result).toEqual(expect.any(String));
  });

  it("a failure after the claim (the token's insert) undoes the claim: the retry sends the link", async () => {
    // The first token insert fails (a sequence, not a table: a failed statement's writes roll back).
    await db.pool.query(`
      create sequence public.t_token_inserts;
      create function public.t_fail_first_token() returns trigger language plpgsql as $$
      begin
        if nextval('public.t_token_inserts') = 1 then raise exception 'injected: the token insert failed'; end if;
        return new;
      end $$;
      create trigger t_fail_first_token before insert on app_private.magic_tokens for each row execute function public.t_fail_first_token();`);
    try {
      const before = smtp.received.length;
      expect((await gql(REQUEST, { email: "retried@example.com" })).body.data.requestLoginLink.result).toBe(true);
      const config = testConfig(db, { SMTP_URL: smtp.url, APP_URL: "https://app.example.com" });
      await drainJobs(db, tasks, config, captureLog);
      const delivery = async () =>
        (await db.pool.query("select state from app_private.email_deliveries where recipient = 'retried@example.com'")).rows.map((r) => r.state);
      // Not left 'sending' (which the next attempt would take for an interrupted send).
      expect(await delivery()).toEqual(["pending"]);
      const jobs = (await listJobs(db)).filter((j) => j.task_identifier === "users__send_login_link");
      expect(jobs.map((j) => j.last_error)).toEqual([expect.stringContaining("injected")]);
      await db.pool.query("select graphile_worker.reschedule_jobs(array[$1]::bigint[], run_at := now())", [jobs[0]!.id]);
      await drainJobs(db, tasks, config, captureLog);
      expect(await delivery()).toEqual(["sent"]);
      const mail = smtp.received.slice(before).filter((m) => m.to === "retried@example.com");
      expect(mail).toHaveLength(1);
      const token = /login\?token=([A-Za-z0-9_-]{43})/.exec(mail[0]!.text)?.[1];
      expect((await gql(LOGIN, { token })).body.data.login.result).toEqual(expect.any(String));
    } finally {
      await db.pool.query("drop trigger t_fail_first_token on app_private.magic_tokens; drop function public.t_fail_first_token(); drop sequence public.t_token_inserts");
    }
  });

  it("never stores or logs the raw token: not in any text or json column of any table, nor in a log line", async () => {
    logLines.length = 0;
    const token = await linkFor("secret@example.com");
    const { rows: columns } = await db.pool.query<{ schema: string; table: string; column: string; type: string }>(
      `select c.table_schema as schema, c.table_name as table, c.column_name as column, c.data_type as type
       from information_schema.columns c join information_schema.tables t using (table_schema, table_name)
       where t.table_type = 'BASE TABLE' and c.table_schema not in ('pg_catalog', 'information_schema')
         and c.data_type in ('text', 'character varying', 'json', 'jsonb', 'bytea')`,
    );
    expect(columns.length).toBeGreaterThan(10);
    expect(columns.filter((c) => c.type === "bytea").length).toBeGreaterThan(0);
    for (const { schema, table, column, type } of columns) {
      // bytea as text is hex: look for the token's characters and for the 32 bytes it encodes.
      const q =
        type === "bytea"
          ? `select count(*)::int as n from "${schema}"."${table}"
             where position(convert_to($1, 'UTF8') in "${column}") > 0 or position(decode(rpad(translate($1, '-_', '+/'), 44, '='), 'base64') in "${column}") > 0`
          : `select count(*)::int as n from "${schema}"."${table}" where strpos("${column}"::text, $1) > 0`;
      const { rows } = await db.pool.query(q, [token]);
      expect(rows[0].n, `${schema}.${table}.${column}`).toBe(0);
    }
    expect(logLines.length).toBeGreaterThan(0);
    expect(logLines.filter((l) => l.includes(token))).toEqual([]);
  });

  it("answers the same for a new address and a known one, creating the account on first use", async () => {
    await db.pool.query("insert into app_public.users (email) values ('known@example.com')");
    const known = await gql(REQUEST, { email: "known@example.com" });
    const unknown = await gql(REQUEST, { email: "brand-new@example.com" });
    expect(known).toEqual(unknown);
    expect(known.body).toEqual({ data: { requestLoginLink: { result: true } } });
    const { rows } = await db.pool.query("select email from app_public.users where email in ('known@example.com', 'brand-new@example.com') order by email");
    expect(rows.map((r) => r.email)).toEqual(["brand-new@example.com", "known@example.com"]);
    expect((await listJobs(db)).filter((j) => j.task_identifier === "users__send_login_link").length).toBeGreaterThanOrEqual(2);
  });

  it("refuses a bad address with EMAIL", async () => {
    expect((await gql(REQUEST, { email: "not-an-address" })).body.errors?.[0]?.extensions?.code).toBe("EMAIL");
  });

  it("allows 5 requests per address in 15 minutes, then RATEL with the retry time, and again after the window", async () => {
    for (let i = 0; i < 5; i++) expect((await gql(REQUEST, { email: "busy@example.com" })).body.data?.requestLoginLink?.result).toBe(true);
    const sixth = await gql(REQUEST, { email: "busy@example.com" });
    expect(sixth.body.errors?.[0]).toMatchObject({ extensions: { code: "RATEL" } });
    expect(sixth.body.errors?.[0]?.message).toMatch(/^Too many requests; try again after \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    await db.pool.query("update app_private.rate_limits set expires_at = now() - interval '1 second'");
    expect((await gql(REQUEST, { email: "busy@example.com" })).body.data?.requestLoginLink?.result).toBe(true);
  });

  it("allows 5 requests per client address in 15 minutes whatever the email", async () => {
    for (let i = 0; i < 5; i++) expect((await gql(REQUEST, { email: `c${i}@example.com` })).body.data?.requestLoginLink?.result).toBe(true);
    expect((await gql(REQUEST, { email: "c5@example.com" })).body.errors?.[0]?.extensions?.code).toBe("RATEL");
  });
});
