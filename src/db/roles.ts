// The two roles the API needs besides the owner: a login `authenticator` (NOINHERIT, so it can
// do nothing until it switches role) and the `visitor` it switches to for each request. Roles are
// cluster-wide, so their names are configurable: two databases on one server don't collide.
import type pg from "pg";
import type { Logger } from "../log.ts";

export interface RoleNames {
  authenticator: string;
  visitor: string;
}

const ALREADY_EXISTS = new Set(["42710", "23505"]);

export async function ensureRoles(
  client: pg.ClientBase,
  roles: RoleNames,
  password: string | null,
  log: Logger,
  options: { resetPassword?: boolean } = {},
): Promise<void> {
  const { rows } = await client.query<{ rolname: string }>("select rolname from pg_roles where rolname = any($1)", [
    [roles.authenticator, roles.visitor],
  ]);
  const existing = new Set(rows.map((r) => r.rolname));
  const authenticator = client.escapeIdentifier(roles.authenticator);
  const visitor = client.escapeIdentifier(roles.visitor);
  const create = async (name: string, sql: string, advice: string) => {
    try {
      await client.query(sql);
      log.info("created database role", { role: name });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code && ALREADY_EXISTS.has(code)) return; // another process created it first
      if (code === "42501") {
        throw new Error(
          `Role ${name} does not exist and the database owner may not create roles. Ask a DBA to run: ${advice}`,
          { cause: err },
        );
      }
      throw err;
    }
  };
  if (!existing.has(roles.visitor)) {
    await create(roles.visitor, `CREATE ROLE ${visitor} NOLOGIN`, `CREATE ROLE ${visitor} NOLOGIN; GRANT ${visitor} TO ${authenticator};`);
  }
  if (!existing.has(roles.authenticator)) {
    if (!password) {
      throw new Error(`Role ${roles.authenticator} does not exist; set AUTHENTICATOR_PASSWORD so it can be created with a password`);
    }
    // The advice never contains the password: error messages end up in logs.
    await create(
      roles.authenticator,
      `CREATE ROLE ${authenticator} LOGIN NOINHERIT PASSWORD ${client.escapeLiteral(password)}`,
      `CREATE ROLE ${authenticator} LOGIN NOINHERIT PASSWORD '...'; GRANT ${visitor} TO ${authenticator};`,
    );
  } else if (password && options.resetPassword) {
    await client.query(`ALTER ROLE ${authenticator} PASSWORD ${client.escapeLiteral(password)}`);
  }
  const { rows: member } = await client.query(
    "select 1 from pg_auth_members m join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member where r.rolname = $1 and u.rolname = $2",
    [roles.visitor, roles.authenticator],
  );
  if (member.length === 0) await client.query(`GRANT ${visitor} TO ${authenticator}`);
}
