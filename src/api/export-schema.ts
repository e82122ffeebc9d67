// `npm run schema:export`: migrate the configured database (embedded by default) and write the
// GraphQL schema it produces to schema.graphql.
import fs from "node:fs/promises";
import { loadConfig } from "../config.ts";
import { createLogger } from "../log.ts";
import { resolveDatabase } from "../db/resolve.ts";
import { migrateDatabase } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { printSchemaSDL, SCHEMA_FILE } from "./schema.ts";

const config = loadConfig();
const log = createLogger(config.log);
const db = await resolveDatabase(config, log);
try {
  await migrateDatabase({ ownerUrl: db.ownerUrl, roles: config.roles, authenticatorPassword: db.authenticatorPassword, resetPassword: db.resetPassword, log });
  const pool = createPool(db.authUrl, { max: 2, name: "schema" }, log);
  try {
    await fs.writeFile(SCHEMA_FILE, await printSchemaSDL(pool, config.roles.visitor));
    log.info("wrote the GraphQL schema", { file: SCHEMA_FILE });
  } finally {
    await pool.end();
  }
} finally {
  await db.embedded?.stop();
}
