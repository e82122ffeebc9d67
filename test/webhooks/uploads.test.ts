// Uploads: POST /uploads stores a file and its row (or neither), owners see only theirs, the
// 6-hourly cleanup deletes exactly the expired files and rows (a file already gone is fine), and
// file.expiring goes out once per file.
import fs from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApi, type ApiHandle } from "../../src/api/server.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import type { ResolvedTask } from "../../src/worker/task.ts";
import { apiBackendsWaitingOnLock, asUser, createTestDb, drainJobs, jobRuns, testConfig, testLog, type TestDb } from "../helpers/db.ts";
import { person, type Person } from "../helpers/offers.ts";

let db: TestDb;
let api: ApiHandle;
let dataDir: string;
let tasks: ResolvedTask[];
let owner: Person;
beforeAll(async () => {
  db = await createTestDb();
  tasks = await loadTasks();
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-uploads-"));
  api = await startApi({
    authUrl: db.authUrl,
    config: testConfig(db, { DATA_DIR: dataDir, FILE_UPLOAD_MAX_BYTES: "4096" }),
    log: testLog,
    health: { workerRunning: () => null },
  });
  owner = await person(db);
});
afterAll(async () => {
  await api?.stop();
  await db?.drop();
  await fs.rm(dataDir, { recursive: true, force: true });
});

const config = () => testConfig(db, { DATA_DIR: dataDir });
const only = (...ids: string[]) => tasks.filter((t) => ids.includes(t.identifier));
const uploadsDir = () => path.join(dataDir, "uploads");

async function upload(token: string | null, content: string, name = "notes.txt") {
  const form = new FormData();
  form.append("file", new Blob([content], { type: "text/plain" }), name);
  const res = await fetch(`${api.url}/uploads`, { method: "POST", body: form, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json()) as any };
}

async function gql(query: string, token: string) {
  const res = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query }),
  });
  return (await res.json()) as any;
}

describe("POST /uploads", () => {
  it("stores the file and its row for the signed-in owner, who alone lists it", async () => {
    const r = await upload(owner.token, "hello world");
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ name: "notes.txt", size: 11, contentType: "text/plain" });
    const { rows } = await db.pool.query("select storage_key, owner_id::text, extract(epoch from expires_at - created_at)::int as ttl from app_public.upload_files where id = $1", [
      r.body.rowId,
    ]);
    expect(rows[0]).toMatchObject({ owner_id: owner.id, ttl: 24 * 3600 });
    expect(await fs.readFile(path.join(uploadsDir(), rows[0].storage_key), "utf8")).toBe("hello world");
    expect((await gql("{ allUploadFiles { nodes { rowId name } } }", owner.token)).data.allUploadFiles.nodes).toEqual([
      { rowId: r.body.rowId, name: "notes.txt" },
    ]);
    const other = await person(db);
    expect((await gql("{ allUploadFiles { nodes { rowId } } }", other.token)).data.allUploadFiles.nodes).toEqual([]);
  });

  it("refuses anonymous uploads, and an upload over the size limit leaves neither file nor row", async () => {
    expect((await upload(null, "x")).status).toBe(401);
    const files = await fs.readdir(uploadsDir());
    const { rows: before } = await db.pool.query("select count(*)::int as n from app_public.upload_files");
    const r = await upload(owner.token, "x".repeat(10_000));
    expect(r.status).toBe(413);
    expect(r.body.errors[0].extensions.code).toBe("FILE_TOO_LARGE");
    expect(await fs.readdir(uploadsDir())).toEqual(files);
    const { rows: after } = await db.pool.query("select count(*)::int as n from app_public.upload_files");
    expect(after[0].n).toBe(before[0].n);
  });
});

describe("POST /uploads: limits and bad forms", () => {
  it("accepts a file of exactly FILE_UPLOAD_MAX_BYTES and refuses one byte more", async () => {
    const exact = await upload(owner.token, "x".repeat(4096));
    expect(exact.status).toBe(201);
    expect(exact.body.size).toBe(4096);
    expect((await upload(owner.token, "x".repeat(4097))).status).toBe(413);
  });

  it("answers 413 without reading the rest of a large body, and the connection closes", async () => {
    const url = new URL(`${api.url}/uploads`);
    const boundary = "----hourglass-test";
    const head = `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.bin"\r\ncontent-type: application/octet-stream\r\n\r\n`;
    const chunk = Buffer.alloc(64 * 1024, 120);
    const total = 256 * 1024 * 1024; // far more than this test could send before its timeout, were it all read
    let sent = 0;
    const answer = await new Promise<{ status: number; body: any; sent: number }>((resolve, reject) => {
      const req = http.request(
        { host: url.hostname, port: url.port, path: url.pathname, method: "POST",
          headers: { authorization: `Bearer ${owner.token}`, "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": String(head.length + total) } },
        (res) => {
          const sentAtAnswer = sent;
          const parts: Buffer[] = [];
          res.on("data", (d: Buffer) => parts.push(d));
          res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(parts).toString()), sent: sentAtAnswer }));
        },
      );
      req.on("error", (err: NodeJS.ErrnoException) => {
        // The server hanging up on the unread rest (EPIPE / ECONNRESET) after answering is expected.
        if (err.code !== "EPIPE" && err.code !== "ECONNRESET") reject(err);
      });
      req.write(head);
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once("drain", pump);
        }
        req.end();
      };
      pump();
    });
    expect(answer.status).toBe(413);
    expect(answer.body.errors[0].extensions.code).toBe("FILE_TOO_LARGE");
    expect(answer.sent).toBeLessThan(total / 4);
  });

  it("answers 400 BAD_MULTIPART to a form without a boundary or with a malformed part, and keeps nothing", async () => {
    const files = await fs.readdir(uploadsDir());
    const post = async (contentType: string, body: string) => {
      const res = await fetch(`${api.url}/uploads`, { method: "POST", headers: { authorization: `Bearer ${owner.token}`, "content-type": contentType }, body });
      return { status: res.status, body: (await res.json()) as any };
    };
    const noBoundary = await post("multipart/form-data", "whatever");
    expect([noBoundary.status, noBoundary.body.errors[0].extensions.code]).toEqual([400, "BAD_MULTIPART"]);
    const malformed = await post("multipart/form-data; boundary=xyz", "--xyz\r\nthis is not a header\r\n\r\ndata\r\n--xyz--\r\n");
    expect([malformed.status, malformed.body.errors[0].extensions.code]).toEqual([400, "BAD_MULTIPART"]);
    expect(await fs.readdir(uploadsDir())).toEqual(files);
  });
});

describe("POST /uploads: when the file cannot be recorded", () => {
  beforeAll(() => fs.mkdir(uploadsDir(), { recursive: true }));
  const rowCount = async () => (await db.pool.query("select count(*)::int as n from app_public.upload_files")).rows[0].n as number;

  it("answers 401 when the session ends while the file arrives, and keeps neither file nor row", async () => {
    const mover = await person(db);
    const files = await fs.readdir(uploadsDir());
    const rowsBefore = await rowCount();
    const url = new URL(`${api.url}/uploads`);
    const boundary = "----hourglass-expiry";
    const head = `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="late.txt"\r\ncontent-type: text/plain\r\n\r\n`;
    const tail = `\r\n--${boundary}--\r\n`;
    const answer = new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = http.request(
        { host: url.hostname, port: url.port, path: url.pathname, method: "POST",
          headers: { authorization: `Bearer ${mover.token}`, "content-type": `multipart/form-data; boundary=${boundary}` } },
        (res) => {
          const parts: Buffer[] = [];
          res.on("data", (d: Buffer) => parts.push(d));
          res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(parts).toString()) }));
        },
      );
      req.on("error", reject);
      req.write(head + "first half, ");
      // Once the first half is on disk (the session was checked before), the session ends; then the rest.
      void (async () => {
        const deadline = Date.now() + 5000;
        while ((await fs.readdir(uploadsDir())).length === files.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        await db.pool.query("update app_private.sessions set expires_at = now() - interval '1 second' where token_hash = sha256(convert_to($1, 'UTF8'))", [mover.token]);
        req.end("second half" + tail);
      })().catch(reject);
    });
    const r = await answer;
    expect([r.status, r.body.errors?.[0]?.extensions?.code, r.body.errors?.[0]?.message]).toEqual([401, "UNAUTHENTICATED", "Sign in to upload."]);
    expect(await fs.readdir(uploadsDir())).toEqual(files);
    expect(await rowCount()).toBe(rowsBefore);
  });

  it("answers 503 STATEMENT_TIMEOUT when recording waits on a lock past the statement timeout, and keeps neither file nor row", async () => {
    const quick = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { DATA_DIR: dataDir, STATEMENT_TIMEOUT_MS: "300" }),
      log: testLog,
      health: { workerRunning: () => null },
    });
    const files = await fs.readdir(uploadsDir());
    const rowsBefore = await rowCount();
    const locker = await db.pool.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table app_public.upload_files in access exclusive mode");
      const form = new FormData();
      form.append("file", new Blob(["waits"], { type: "text/plain" }), "locked.txt");
      const res = await fetch(`${quick.url}/uploads`, {
        method: "POST",
        body: form,
        headers: { authorization: `Bearer ${owner.token}` },
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await res.json()) as any;
      expect([res.status, body.errors?.[0]?.extensions?.code]).toEqual([503, "STATEMENT_TIMEOUT"]);
      await locker.query("rollback");
      expect(await fs.readdir(uploadsDir())).toEqual(files);
      expect(await rowCount()).toBe(rowsBefore);
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await quick.stop();
    }
  });

  it("answers 503 UNAVAILABLE when no database connection is free in time, and keeps neither file nor row", async () => {
    const small = await startApi({
      authUrl: db.authUrl,
      config: testConfig(db, { DATA_DIR: dataDir, API_POOL_SIZE: "2" }),
      log: testLog,
      health: { workerRunning: () => null },
      connectTimeoutMs: 500,
    });
    const ask = async () => {
      const res = await fetch(`${small.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${owner.token}` },
        body: JSON.stringify({ query: "{ currentUser { rowId } }" }),
      });
      return ((await res.json()) as any).data?.currentUser?.rowId as string | undefined;
    };
    const locker = await db.pool.connect();
    try {
      expect(await ask()).toBe(owner.id); // the session is remembered: the upload needs no lookup
      const files = await fs.readdir(uploadsDir());
      const rowsBefore = await rowCount();
      await locker.query("begin");
      await locker.query("lock table app_public.users in access exclusive mode");
      // Two requests wait on the lock, holding both of the API's connections.
      const held = [ask(), ask()];
      const deadline = Date.now() + 5000;
      while ((await apiBackendsWaitingOnLock(db)) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await apiBackendsWaitingOnLock(db)).toBe(2);
      const form = new FormData();
      form.append("file", new Blob(["kept nowhere"], { type: "text/plain" }), "busy.txt");
      const res = await fetch(`${small.url}/uploads`, { method: "POST", body: form, headers: { authorization: `Bearer ${owner.token}` } });
      const body = (await res.json()) as any;
      expect([res.status, body.errors?.[0]?.extensions?.code]).toEqual([503, "UNAVAILABLE"]);
      await locker.query("rollback");
      expect(await Promise.all(held)).toEqual([owner.id, owner.id]);
      expect(await fs.readdir(uploadsDir())).toEqual(files);
      expect(await rowCount()).toBe(rowsBefore);
    } finally {
      await locker.query("rollback").catch(() => {});
      locker.release();
      await small.stop();
    }
  });
});

describe("upload sweeps", () => {
  it("the cleanup deletes exactly the expired files and rows; a file already gone is fine", async () => {
    const expired = (await upload(owner.token, "old")).body.rowId;
    const vanished = (await upload(owner.token, "gone")).body.rowId;
    const fresh = (await upload(owner.token, "new")).body.rowId;
    await db.pool.query(
      "update app_public.upload_files set created_at = now() - interval '2 days', expires_at = now() - interval '1 day' where id = any($1::bigint[])",
      [[expired, vanished]],
    );
    const key = async (id: string) => (await db.pool.query("select storage_key from app_public.upload_files where id = $1", [id])).rows[0]?.storage_key;
    const expiredFile = path.join(uploadsDir(), await key(expired));
    await fs.unlink(path.join(uploadsDir(), await key(vanished)));
    const freshFile = path.join(uploadsDir(), await key(fresh));
    await db.pool.query("select app_private.add_job('upload_files__cleanup', '{}')");
    await drainJobs(db, only("upload_files__cleanup"), config());
    expect((await jobRuns(db, "upload_files__cleanup")).at(-1)).toMatchObject({
      outcome: "succeeded",
      result: { deleted: 2, remaining: 0, alreadyGone: 1, failed: 0 },
    });
    await expect(fs.access(expiredFile)).rejects.toMatchObject({ code: "ENOENT" });
    await fs.access(freshFile);
    expect(await key(expired)).toBeUndefined();
    expect(await key(vanished)).toBeUndefined();
    expect(await key(fresh)).toBeDefined();
  });

  it("file.expiring goes out once per file about to expire, only to its owner's endpoints", async () => {
    const soon = (await upload(owner.token, "soon")).body.rowId;
    const later = (await upload(owner.token, "later")).body.rowId;
    await db.pool.query("update app_public.upload_files set expires_at = now() + interval '1 hour' where id = $1", [soon]);
    const ep = await asUser(db, owner.sessionId, async (c) =>
      (await c.query("select endpoint_id::text as id from app_public.create_webhook_endpoint('http://127.0.0.1:9/hook', '{file.expiring}')")).rows[0].id);
    for (let i = 0; i < 2; i++) {
      await db.pool.query("select app_private.add_job('upload_files__notify_expiring', '{}')");
      await drainJobs(db, only("upload_files__notify_expiring"), config());
    }
    expect((await jobRuns(db, "upload_files__notify_expiring")).map((r) => r.result)).toEqual([
      { notified: 1, remaining: 0 },
      { notified: 0, remaining: 0 },
    ]);
    const { rows } = await db.pool.query(
      "select e.idempotency_key, e.payload->>'fileId' as file from app_public.outbox_events e join app_public.webhook_deliveries d on d.event_id = e.id where d.endpoint_id = $1",
      [ep],
    );
    expect(rows).toEqual([{ idempotency_key: `file.expiring:${soon}`, file: soon }]);
    const { rows: notNotified } = await db.pool.query("select expiring_notified_at from app_public.upload_files where id = $1", [later]);
    expect(notNotified).toEqual([{ expiring_notified_at: null }]);
  });
});
