// The GraphQL schema as SDL, sorted so that the committed schema.graphql diffs cleanly.
// `npm run schema:export` rewrites schema.graphql; a test fails when the committed file is stale.
import path from "node:path";
import type pg from "pg";
import { makeSchema } from "postgraphile";
import { PgSubscriber } from "postgraphile/adaptors/pg";
import { lexicographicSortSchema, printSchema } from "postgraphile/graphql";
import { makePreset } from "./preset.ts";
import { JobEventListeners } from "./events.ts";
import { SessionCache } from "./sessions.ts";
import { createLogger } from "../log.ts";

export const SCHEMA_FILE = path.resolve(import.meta.dirname, "../../schema.graphql");

export async function printSchemaSDL(pool: pg.Pool, visitorRole: string): Promise<string> {
  const pgSubscriber = new PgSubscriber(pool);
  try {
    const log = createLogger({ level: "error", format: "json" });
    // Never started: exporting the schema looks no session up.
    const sessions = new SessionCache(pool, { listenUrl: "", ttlMs: 0, log });
    const preset = makePreset({ pool, sessions, pgSubscriber, eventListeners: new JobEventListeners(pool, log), visitorRole, statementTimeoutMs: 5000, sessionLifetimeDays: 30, development: false, maskError: (e) => e, tasks: [], log });
    const { schema } = await makeSchema(preset);
    return printSchema(lexicographicSortSchema(schema)) + "\n";
  } finally {
    pgSubscriber.release();
  }
}
