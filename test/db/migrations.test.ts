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

  it("install graphile-worker's schema before ours, so SQL can enqueue through it", async () => {
    const { rows } = await db.pool.query("select to_regprocedure('graphile_worker.add_jobs(graphile_worker.job_spec[], boolean)') is not null as ok");
    expect(rows[0].ok).toBe(true);
  });
});
