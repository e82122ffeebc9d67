// Once per test run: a PostgreSQL server (TEST_DATABASE_URL, or a fresh embedded one in a temp
// directory), run-scoped role names, and a migrated template database that each test file clones.
// Everything made here is dropped at the end; nothing depends on an earlier run.
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { createLogger } from "../../src/log.ts";
import { startEmbedded, type EmbeddedServer } from "../../src/db/embedded.ts";
import { migrateDatabase } from "../../src/db/migrate.ts";
import { createDatabaseIfMissing } from "../../src/db/resolve.ts";
import { databaseUrl, testEnv, type TestRun } from "./env.ts";

declare module "vitest" {
  export interface ProvidedContext {
    run: TestRun;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export default async function setup(project: TestProject) {
  const log = createLogger({ level: testEnv.logLevel, format: "pretty" });
  const id = randomBytes(4).toString("hex");
  let embedded: EmbeddedServer | null = null;
  let tmp: string | null = null;
  let serverUrl = testEnv.databaseUrl;
  if (!serverUrl) {
    // Under /tmp (world-searchable), so that as root the server can run as the postgres user.
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-test-"));
    await fs.chmod(tmp, 0o755);
    embedded = await startEmbedded({ dir: path.join(tmp, "postgres"), port: await freePort(), log });
    serverUrl = embedded.url("postgres");
  }
  const run: TestRun = {
    serverUrl,
    prefix: `hg_t${id}`,
    template: `hg_t${id}_template`,
    roles: { authenticator: `hg_t${id}_authenticator`, visitor: `hg_t${id}_visitor` },
    authenticatorPassword: randomBytes(18).toString("base64url"),
    embedded: embedded !== null,
  };
  const started = Date.now();
  await createDatabaseIfMissing(serverUrl, run.template);
  await migrateDatabase({
    ownerUrl: databaseUrl(serverUrl, run.template),
    roles: run.roles,
    authenticatorPassword: run.authenticatorPassword,
    resetPassword: true,
    log,
  });
  log.info("test template ready", { server: embedded ? "embedded" : "TEST_DATABASE_URL", ms: Date.now() - started });
  project.provide("run", run);

  return async () => {
    const client = new pg.Client({ connectionString: serverUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ datname: string }>("select datname from pg_database where datname like $1", [`${run.prefix}\\_%`]);
      for (const { datname } of rows) await client.query(`drop database if exists ${client.escapeIdentifier(datname)} with (force)`);
      for (const role of [run.roles.authenticator, run.roles.visitor]) {
        await client.query(`drop role if exists ${client.escapeIdentifier(role)}`);
      }
    } finally {
      await client.end();
    }
    await embedded?.stop();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  };
}
