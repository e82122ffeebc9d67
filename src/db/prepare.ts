// graphile-migrate `afterReset` hook for development: a freshly reset (or shadow) database gets
// the roles and graphile-worker's schema that our migrations build on. Run by the graphile-migrate
// CLI with GM_DBURL set; the application itself does the same in src/db/migrate.ts.
import pg from "pg";
import { runMigrations } from "graphile-worker";
import { loadConfig } from "../config.ts";
import { createLogger, workerLogger } from "../log.ts";
import { ensureRoles } from "./roles.ts";

const config = loadConfig();
const log = createLogger(config.log);
const url = config.gmDatabaseUrl;
if (!url) throw new Error("GM_DBURL is not set: run this through graphile-migrate");
const client = new pg.Client({ connectionString: url });
await client.connect();
try {
  await ensureRoles(client, config.roles, config.authenticatorPassword, log);
} finally {
  await client.end();
}
await runMigrations({ connectionString: url, logger: workerLogger(log) });
