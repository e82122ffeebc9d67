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

/** The adaptor's statements, exactly as @dataplan/pg 1.0 sends them (test/api/transaction-start.test.ts checks they still match). */
export const ADAPTOR_BEGIN = "begin";
export const ADAPTOR_SETTINGS = "select set_config(el->>0, el->>1, true) from json_array_elements($1::json) el";

type Query = (...args: unknown[]) => unknown;
const PATCHED = Symbol("transaction start coalesced");
/** A `begin` held back on this client, not yet sent. */
const HELD = Symbol("begin held back");
type Patched = pg.PoolClient & { [PATCHED]?: true; [HELD]?: boolean };

const textOf = (first: unknown): string | undefined =>
  typeof first === "string" ? first : typeof first === "object" && first !== null ? (first as { text?: unknown }).text as string | undefined : undefined;
const valuesOf = (first: unknown, second: unknown): unknown[] | undefined =>
  typeof first === "object" && first !== null && "values" in first ? (first as { values?: unknown[] }).values : Array.isArray(second) ? second : undefined;

/** Applies to every client the pool connects from now on. */
export function coalesceTransactionStart(pool: pg.Pool): void {
  // A client released with a begin still held back (its user gave up before any statement) must
  // not carry it into its next checkout: nothing was sent, so nothing is open.
  pool.on("release", (_err: unknown, client: pg.PoolClient) => {
    (client as Patched)[HELD] = false;
  });
  pool.on("connect", (client) => {
    const c = client as Patched;
    if (c[PATCHED]) return;
    c[PATCHED] = true;
    const original = c.query.bind(c) as Query;
    // A statement answered here without a round trip: as pg answers, through the callback (later,
    // never synchronously) or a promise.
    const done = (result: unknown, args: unknown[]) => {
      const callback = args.find((a) => typeof a === "function") as ((err: unknown, r: unknown) => void) | undefined;
      if (callback) {
        process.nextTick(callback, null, result);
        return undefined;
      }
      return Promise.resolve(result);
    };
    const empty = (command: string) => ({ command, rowCount: null, rows: [], fields: [], oid: 0 });
    c.query = ((...args: unknown[]) => {
      const text = textOf(args[0]);
      if (text === ADAPTOR_BEGIN && !c[HELD]) {
        c[HELD] = true;
        return done(empty("BEGIN"), args);
      }
      if (!c[HELD]) return original(...args);
      c[HELD] = false;
      if (text === ADAPTOR_SETTINGS) {
        const settings = valuesOf(args[0], args[1])?.[0];
        if (typeof settings === "string") {
          // Concatenated, not String.replace: a replacement string gives `$'`, `$&` and `$$` in a
          // value special meanings, which could end the literal early.
          const [before, after] = ADAPTOR_SETTINGS.split("$1") as [string, string];
          const combined = "begin; " + before + c.escapeLiteral(settings) + after;
          const rest = args.slice(typeof args[0] === "string" ? 2 : 1);
          return original(combined, ...rest);
        }
      }
      if (text === "commit" || text === "rollback") return done(empty(text.toUpperCase()), args);
      // Anything else: the held-back begin goes first, on its own. pg runs a client's statements
      // in the order they are given, so the statement is handed over as it came (a callback, a
      // promise or a submittable such as a cursor keeps working). A plain `begin` fails only with
      // its connection, and then the statement after it fails too: that is the error its caller sees.
      (original(ADAPTOR_BEGIN) as Promise<unknown>).catch(() => {});
      return original(...args);
    }) as typeof c.query;
  });
}
