// The process as operators run it: `node src/main.ts` against a server, and against the embedded
// server with no configuration at all; signals shut it down cleanly.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDb, createUser, signIn, type TestDb } from "./helpers/db.ts";

const ROOT = path.resolve(import.meta.dirname, "..");

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

interface Proc {
  child: ChildProcess;
  output: () => string;
  ready: Promise<{ graphql?: string; health?: string }>;
  exited: Promise<number | null>;
}

function start(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, ["src/main.ts", ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", LOG_FORMAT: "json", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const ready = new Promise<{ graphql?: string; health?: string }>((resolve, reject) => {
    const check = () => {
      for (const line of out.split("\n")) {
        if (line.includes('"Hourglass is ready"')) return resolve(JSON.parse(line));
      }
    };
    child.stdout!.on("data", check);
    child.stderr!.on("data", check);
    void exited.then((code) => reject(new Error(`exited with ${code} before ready:\n${out}`)));
  });
  ready.catch(() => {}); // a test that expects an early exit never awaits ready
  return { child, output: () => out, ready, exited };
}

function envFor(db: TestDb, extra: Record<string, string> = {}) {
  return {
    DATABASE_URL: db.ownerUrl,
    AUTHENTICATOR_PASSWORD: db.run.authenticatorPassword,
    DATABASE_AUTHENTICATOR: db.run.roles.authenticator,
    DATABASE_VISITOR: db.run.roles.visitor,
    PORT: "0",
    ...extra,
  };
}

describe("npm start", () => {
  it("refuses a bad configuration value with a message naming the variable", async () => {
    const p = start([], { PORT: "abc" });
    expect(await p.exited).toBe(2);
    expect(p.output()).toMatch(/PORT must be a whole number, got "abc"/);
  });

  it("runs the API and the worker against DATABASE_URL, and SIGTERM stops it cleanly", async () => {
    const p = start([], envFor(db));
    const ready = await p.ready;
    const health = await fetch(ready.health!);
    // Its own worker heartbeats, so the cluster has a live scheduler.
    expect(await health.json()).toMatchObject({ status: "ok", database: "ok", worker: "running", jobs: { workersAlive: 1, schedulerHealthy: true } });
    p.child.kill("SIGTERM");
    expect(await p.exited).toBe(0);
    expect(p.output()).toMatch(/"msg":"worker stopped"/);
    expect(p.output()).toMatch(/"msg":"API stopped"/);
  });

  it("--api and --worker run one role each, side by side against one database", async () => {
    const api = start(["--api"], envFor(db));
    const worker = start(["--worker"], envFor(db));
    const [a, w] = await Promise.all([api.ready, worker.ready]);
    expect(a.graphql).toMatch(/\/graphql$/);
    expect(w.graphql).toBeUndefined();
    expect(await (await fetch(a.health!)).json()).toMatchObject({ worker: "not in this process" });
    api.child.kill("SIGINT");
    worker.child.kill("SIGINT");
    expect(await Promise.all([api.exited, worker.exited])).toEqual([0, 0]);
  });

  it("answers an upload whose write to disk fails at once, with 500, and keeps neither file nor row", async () => {
    // The API's own process, whose files may not grow past 64 KiB (RLIMIT_FSIZE, set with
    // prlimit once it is up): writing a larger upload fails with EFBIG, as on a full disk.
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-upload-fail-"));
    const p = start(["--api"], envFor(db, { DATA_DIR: dataDir }));
    try {
      const ready = await p.ready;
      await new Promise<void>((resolve, reject) =>
        spawn("prlimit", ["--pid", String(p.child.pid), "--fsize=65536"], { stdio: "inherit" })
          .on("error", reject)
          .on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`prlimit exited with ${code}`)))),
      );
      const { id } = await createUser(db);
      const { token } = await signIn(db, id);
      const form = new FormData();
      form.append("file", new Blob([Buffer.alloc(1024 * 1024, "x")], { type: "text/plain" }), "big.txt");
      const res = await fetch(ready.graphql!.replace(/\/graphql$/, "/uploads"), { method: "POST", body: form, headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(500);
      expect((await res.json()) as unknown).toMatchObject({ errors: [{ extensions: { code: "INTERNAL_ERROR" } }] });
      expect(p.output()).toMatch(/"msg":"upload failed".*EFBIG/);
      expect(await fs.readdir(path.join(dataDir, "uploads"))).toEqual([]);
      expect((await db.pool.query("select count(*)::int as n from app_public.upload_files where name = 'big.txt'")).rows[0].n).toBe(0);
    } finally {
      p.child.kill("SIGTERM");
      await p.exited;
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });

  it("with no configuration starts an embedded PostgreSQL under DATA_DIR, reuses it, and stops it on Ctrl-C", async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-main-"));
    await fs.chmod(dataDir, 0o755);
    const port = String(20000 + Math.floor(Math.random() * 20000));
    try {
      for (const round of ["first start", "second start"]) {
        const p = start([], { DATA_DIR: dataDir, PORT: "0", EMBEDDED_PG_PORT: port });
        const ready = await p.ready;
        expect(ready.graphql, round).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/graphql$/);
        const r = await fetch(ready.graphql!, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ query: "{ currentUser { email } }" }),
        });
        expect(await r.json()).toEqual({ data: { currentUser: null } });
        // The same cluster both times: a row written in the first is there in the second.
        const password = (await fs.readFile(path.join(dataDir, "postgres.password"), "utf8")).trim();
        const owner = new pg.Client({ connectionString: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/hourglass` });
        await owner.connect();
        try {
          if (round === "first start") await owner.query("create table public.t_marker as select 'from the first start'::text as note");
          const { rows } = await owner.query("select note from public.t_marker");
          expect(rows, round).toEqual([{ note: "from the first start" }]);
        } finally {
          await owner.end();
        }
        if (round === "first start") {
          // A second process on the same DATA_DIR must not take the running server away.
          const intruder = start([], { DATA_DIR: dataDir, PORT: "0", EMBEDDED_PG_PORT: port });
          expect(await intruder.exited).toBe(1);
          expect(intruder.output()).toMatch(/is in use by process \d+ \(another `npm start` with the same DATA_DIR\)/);
          expect((await fetch(ready.health!)).status).toBe(200);
        }
        p.child.kill("SIGINT");
        expect(await p.exited, round).toBe(0);
        expect(p.output()).toMatch(/embedded PostgreSQL stopped/);
        expect(existsSync(path.join(dataDir, "postgres", "postmaster.pid")), `${round}: server still running`).toBe(false);
      }
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
