// What the tests take from their environment, read in one place (like src/config.ts for the app).
import type { RoleNames } from "../../src/db/roles.ts";
import type { LogLevel } from "../../src/config.ts";

export const testEnv = {
  /** A superuser connection to an existing server; unset: an embedded server per run. */
  databaseUrl: process.env.TEST_DATABASE_URL || null,
  logLevel: (process.env.TEST_LOG_LEVEL as LogLevel | undefined) ?? "warn",
};

export interface TestRun {
  serverUrl: string;
  prefix: string;
  template: string;
  roles: RoleNames;
  authenticatorPassword: string;
  embedded: boolean;
}

export function databaseUrl(serverUrl: string, database: string, user?: { name: string; password: string }): string {
  const url = new URL(serverUrl);
  url.pathname = "/" + encodeURIComponent(database);
  if (user) {
    url.username = encodeURIComponent(user.name);
    url.password = encodeURIComponent(user.password);
  }
  return url.toString();
}
