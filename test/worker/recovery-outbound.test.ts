// Crash recovery at the outbound edges, with real worker processes (`src/main.ts --worker`), a
// real SMTP server and a real HTTP receiver on loopback, both of which take their time to answer:
// a worker SIGKILLed while it is sending emails and webhooks leaves every job to a live worker,
// and still no email arrives twice. An email whose send the kill interrupted is marked failed as
// interrupted (it may or may not have arrived) instead of being sent again. A webhook is sent
// again only when the kill came before the receiver answered, with the same webhook-id, so a
// receiver that deduplicates by it (as the Standard Webhooks spec asks) sees it once.
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { INTERRUPTED } from "../../src/email/send.ts";
import { asUser, createTestDb, createUser, signIn, testConfig, type TestDb } from "../helpers/db.ts";
import { startSmtpSink, type SmtpSink } from "../helpers/smtp.ts";

const HOLD_MS = 1500;
const N = 100;
const NODE = path.resolve(import.meta.dirname, "../../node_modules/.bin/node");
const MAIN = path.resolve(import.meta.dirname, "../../src/main.ts");

let db: TestDb;
let smtp: SmtpSink;
let server: http.Server;
let hookUrl: string;
const hooks: { id: string; at: number; answeredAt: number | null }[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  db = await createTestDb();
  smtp = await startSmtpSink({ holdMs: HOLD_MS });
  server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const hook = { id: String(req.headers["webhook-id"]), at: Date.now(), answeredAt: null as number | null };
      hooks.push(hook);
      setTimeout(() => {
        if (res.socket?.destroyed) return;
        res.writeHead(200).end();
        hook.answeredAt = Date.now();
      }, HOLD_MS);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  hookUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await smtp?.close();
  await db?.drop();
});

async function startWorker(): Promise<ChildProcess> {
  const config = testConfig(db);
  const child = spawn(NODE, [MAIN, "--worker"], {
    env: {
      ...process.env,
      NODE_ENV: "test",
      DATABASE_URL: db.ownerUrl,
      AUTHENTICATOR_PASSWORD: db.run.authenticatorPassword,
      DATABASE_AUTHENTICATOR: config.roles.authenticator,
      DATABASE_VISITOR: config.roles.visitor,
      SMTP_URL: smtp.url,
      WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8",
      WORKER_CONCURRENCY: "40",
      WORKER_DEAD_AFTER_MS: "3000",
      JOB_HISTORY_FLUSH_MS: "20",
      LOG_LEVEL: "error",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  // Ready once it heartbeats.
  await until(async () => (await count("select count(*)::int as n from app_public.worker_processes where pid = $1", [child.pid])) === 1, 60_000);
  return child;
}

const count = async (sql: string, params: unknown[] = []) => (await db.pool.query(sql, params)).rows[0].n as number;

async function until(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("crash recovery at the outbound edges", () => {
  it("a worker SIGKILLed mid-send: every job completes, no email arrives twice, no acknowledged webhook is sent again", { timeout: 150_000 }, async () => {
    // 100 emails and 100 webhooks (an admin's endpoint receives every event of its topic).
    const admin = await createUser(db, { isAdmin: true });
    const { sessionId } = await signIn(db, admin.id);
    await asUser(db, sessionId, (c) => c.query("select app_public.create_webhook_endpoint($1, array['offer.sent'])", [hookUrl]));
    await db.pool.query(
      `select count(app_private.queue_email('crash-test:' || g, 'notification', 'r' || g || '@example.com', '{"title": "Hello", "body": "Test"}'))
       from generate_series(1, ${N}) g`,
    );
    await db.pool.query(
      `select app_private.emit_events('offer.sent', array(select jsonb_build_object('n', g) from generate_series(1, ${N}) g),
         array(select 'crash-test:' || g from generate_series(1, ${N}) g), array(select '[]'::jsonb from generate_series(1, ${N}) g))`,
    );
    expect(await count("select count(*)::int as n from graphile_worker.jobs where task_identifier in ('send_email', 'webhooks__deliver')")).toBe(2 * N);

    const doomed = await startWorker();
    // Kill it while it has emails and webhooks in the receivers' hands, unanswered.
    await until(() => smtp.received.length >= 10 && hooks.filter((h) => h.answeredAt === null).length >= 10, 60_000);
    doomed.kill("SIGKILL");
    const killedAt = Date.now();
    const inFlightHooks = new Set(hooks.filter((h) => h.answeredAt === null).map((h) => h.id));
    const emailsBeforeKill = smtp.received.length;
    expect(emailsBeforeKill).toBeLessThan(N);

    await startWorker();
    await until(
      async () =>
        (await count("select count(*)::int as n from graphile_worker.jobs where task_identifier in ('send_email', 'webhooks__deliver')")) === 0 &&
        (await count("select count(*)::int as n from app_public.job_runs where outcome = 'running'")) === 0,
      90_000,
    );
    const done = Date.now();

    // Emails: none twice. Each is sent, or was interrupted by the kill and not sent again.
    const perRecipient = new Map<string, number>();
    for (const m of smtp.received) perRecipient.set(m.to, (perRecipient.get(m.to) ?? 0) + 1);
    expect([...perRecipient.values()].filter((n) => n > 1)).toEqual([]);
    const { rows: states } = await db.pool.query(
      "select state, last_error, count(*)::int as n from app_private.email_deliveries where key like 'crash-test:%' group by 1, 2 order by 1",
    );
    const sent = states.find((s) => s.state === "sent")?.n ?? 0;
    const interrupted = states.find((s) => s.state === "failed" && s.last_error === INTERRUPTED)?.n ?? 0;
    expect(sent + interrupted).toBe(N);
    expect(interrupted).toBeGreaterThan(0); // the kill did interrupt sends
    // Every email marked sent arrived (exactly once, above); an interrupted one may have arrived.
    expect(smtp.received.length).toBeGreaterThanOrEqual(sent);
    expect(smtp.received.length).toBeLessThanOrEqual(N);

    // Webhooks: every delivery succeeded; an id arrived again only if the kill came before its answer.
    expect(await count("select count(*)::int as n from app_public.webhook_deliveries where status <> 'delivered'")).toBe(0);
    expect(await count("select count(*)::int as n from app_public.webhook_deliveries")).toBe(N);
    const perId = new Map<string, number>();
    for (const h of hooks) perId.set(h.id, (perId.get(h.id) ?? 0) + 1);
    expect(perId.size).toBe(N);
    const again = [...perId].filter(([, n]) => n > 1).map(([id]) => id);
    for (const id of again) expect(inFlightHooks.has(id)).toBe(true);
    expect(Math.max(...perId.values())).toBeLessThanOrEqual(2);

    // The orphans ran again well within a minute of the kill.
    expect(done - killedAt).toBeLessThan(60_000);
    expect(await count("select count(*)::int as n from app_public.job_runs where outcome = 'abandoned'")).toBeGreaterThan(0);
  });
});
