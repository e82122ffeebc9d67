// One round trip instead of two to start each GraphQL request's transaction.
//
// PostGraphile's pg adaptor (@dataplan/pg) runs every request that has pgSettings as
//   begin                                   -- round trip 1
//   select set_config(...) from json_...    -- round trip 2, the settings as one JSON parameter
//   <the request's queries>
//   commit
// On this kind of machine a round trip to Postgres is a large part of what a small request costs
// (a CPU profile of the API at 20 clients spent a third of its time in socket writes), so the
// pool's clients hold back `begin` and send it with the settings as one simple-protocol message:
// `begin; select set_config(...) from json_array_elements('<settings>'::json) el`. The settings
// travel as an escaped literal instead of a parameter; nothing else changes. Any other statement
// after a held-back `begin` first sends the `begin` on its own, and a transaction that ends before
// any statement (commit or rollback right after begin) sends nothing.
import type pg from "pg";

/** The adaptor's statements, exactly as @dataplan/pg 1.0 sends them (test/api/api.test.ts checks they still match). */
export const ADAPTOR_BEGIN = "begin";
export const ADAPTOR_SETTINGS = "select set_config(el->>0, el->>1, true) from json_array_elements($1::json) el";

type Query = (...args: unknown[]) => unknown;
const PATCHED = Symbol("transaction start coalesced");

const textOf = (first: unknown): string | undefined =>
  typeof first === "string" ? first : typeof first === "object" && first !== null ? (first as { text?: unknown }).text as string | undefined : undefined;
const valuesOf = (first: unknown, second: unknown): unknown[] | undefined =>
  typeof first === "object" && first !== null && "values" in first ? (first as { values?: unknown[] }).values : Array.isArray(second) ? second : undefined;

/** Applies to every client the pool connects from now on. */
export function coalesceTransactionStart(pool: pg.Pool): void {
  pool.on("connect", (client) => {
    const c = client as pg.PoolClient & { [PATCHED]?: true };
    if (c[PATCHED]) return;
    c[PATCHED] = true;
    const original = c.query.bind(c) as Query;
    let held = false;
    const done = (result: unknown, args: unknown[]) => {
      const callback = args.find((a) => typeof a === "function") as ((err: unknown, r: unknown) => void) | undefined;
      if (callback) {
        callback(null, result);
        return undefined;
      }
      return Promise.resolve(result);
    };
    const empty = (command: string) => ({ command, rowCount: null, rows: [], fields: [], oid: 0 });
    c.query = ((...args: unknown[]) => {
      const text = textOf(args[0]);
      if (text === ADAPTOR_BEGIN && !held) {
        held = true;
        return done(empty("BEGIN"), args);
      }
      if (!held) return original(...args);
      held = false;
      if (text === ADAPTOR_SETTINGS) {
        const settings = valuesOf(args[0], args[1])?.[0];
        if (typeof settings === "string") {
          const combined = `begin; ${ADAPTOR_SETTINGS.replace("$1", `${c.escapeLiteral(settings)}`)}`;
          const rest = args.slice(typeof args[0] === "string" ? 2 : 1);
          return original(combined, ...rest);
        }
      }
      if (text === "commit" || text === "rollback") return done(empty(text.toUpperCase()), args);
      // Anything else: the held-back begin goes first, on its own.
      return (original(ADAPTOR_BEGIN) as Promise<unknown>).then(() => original(...args));
    }) as typeof c.query;
  });
}
