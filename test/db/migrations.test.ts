import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { inject } from "vitest";
import { migrateDatabase } from "../../src/db/migrate.ts";
import { createDatabaseIfMissing } from "../../src/db/resolve.ts";
import { createTestDb, testLog, type TestDb } from "../helpers/db.ts";
import { databaseUrl } from "../helpers/env.ts";

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

async function migrationsApplied(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ filename: string }>("select filename from graphile_migrate.migrations order by filename");
    return rows.map((r) => r.filename);
  } finally {
    await client.end();
  }
}

describe("migrations", () => {
  it("are idempotent: running them again on a migrated database changes nothing", async () => {
    const before = await migrationsApplied(db.ownerUrl);
    expect(before.length).toBeGreaterThan(0);
    const run = db.run;
    await migrateDatabase({ ownerUrl: db.ownerUrl, roles: run.roles, authenticatorPassword: run.authenticatorPassword, log: testLog });
    expect(await migrationsApplied(db.ownerUrl)).toEqual(before);
  });

  it("apply once when three processes start on an empty database at the same moment", async () => {
    const run = inject("run");
    const name = `${run.prefix}_race`;
    await createDatabaseIfMissing(run.serverUrl, name);
    const url = databaseUrl(run.serverUrl, name);
    const opts = { ownerUrl: url, roles: run.roles, authenticatorPassword: run.authenticatorPassword, log: testLog };
    const results = await Promise.allSettled([migrateDatabase(opts), migrateDatabase(opts), migrateDatabase(opts)]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    expect(await migrationsApplied(url)).toEqual(await migrationsApplied(db.ownerUrl));
    const admin = new pg.Client({ connectionString: run.serverUrl });
    await admin.connect();
    await admin.query(`drop database ${admin.escapeIdentifier(name)} with (force)`);
    await admin.end();
  });

  it("run as a database owner that is not a superuser, creating the API's roles with CREATEROLE", async () => {
    const run = inject("run");
    const owner = `${run.prefix}_owner`;
    const roles = { authenticator: `${run.prefix}_o_auth`, visitor: `${run.prefix}_o_visitor` };
    const name = `${run.prefix}_nonsuper`;
    const admin = new pg.Client({ connectionString: run.serverUrl });
    await admin.connect();
    try {
      await admin.query(`create role ${owner} login createrole password 'owner-pw'`);
      await admin.query(`create database ${name} owner ${owner}`);
      const ownerUrl = databaseUrl(run.serverUrl, name, { name: owner, password: "owner-pw" });
      await migrateDatabase({ ownerUrl, roles, authenticatorPassword: "auth-pw", log: testLog });
      const authUrl = databaseUrl(run.serverUrl, name, { name: roles.authenticator, password: "auth-pw" });
      const client = new pg.Client({ connectionString: authUrl });
      await client.connect();
      try {
        // The authenticator can become the visitor and see (empty) app_public, nothing more.
        await client.query(`set role ${roles.visitor}`);
        expect((await client.query("select count(*)::int as n from app_public.users")).rows[0].n).toBe(0);
        await expect(client.query("select * from app_private.sessions")).rejects.toMatchObject({ code: "42501" });
      } finally {
        await client.end();
      }
    } finally {
      await admin.query(`drop database if exists ${name} with (force)`);
      for (const role of [roles.authenticator, roles.visitor, owner]) await admin.query(`drop role if exists ${role}`);
      await admin.end();
    }
  });

  it("install graphile-worker's schema before ours, so SQL can enqueue through it", async () => {
    const { rows } = await db.pool.query("select to_regprocedure('graphile_worker.add_jobs(graphile_worker.job_spec[], boolean)') is not null as ok");
    expect(rows[0].ok).toBe(true);
  });
});
