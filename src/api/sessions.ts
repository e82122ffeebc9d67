// Bearer tokens to sessions, remembered between requests.
//
// Every GraphQL request with a token looked its session up in Postgres before its own queries: one
// more round trip out of four, about a tenth of what a small request costs the API and the
// database (BENCHMARKS.md §8). A token's session is now remembered in this process until the
// first of: the session's own expiry, SESSION_CACHE_MS after it was read, or the session ending
// in Postgres. Migration 000025 announces every session that ends before its expiry (logout, a
// DBA's delete, a deleted user, an expiry moved) on hourglass:sessions_ended, with the SHA-256 of
// its token (the database keeps only that; it cannot be turned back into a token), or `*` for
// more than 50 at once; this class listens on a connection of its own and forgets them.
//
// It remembers nothing while it is not listening: until its LISTEN has succeeded, and from the
// moment that connection fails until it listens again (it then starts empty, since what was
// announced in between is lost). A lookup that was in flight when an announcement arrived is not
// remembered either (it may have read the session just before it ended). Tokens that match no live
// session are never remembered. Whatever this process believes, each request's own SQL checks its
// session again (app_public.current_user_id), so a stale entry could only turn the 401 of an ended
// session into an anonymous request, never grant anything.
import { createHash } from "node:crypto";
import pg from "pg";
import { context, sideEffect } from "postgraphile/grafast";
import { wrapPlans } from "postgraphile/utils";
import type { Logger } from "../log.ts";

declare global {
  namespace Grafast {
    interface Context {
      /** The SHA-256 (hex) of the request's bearer token, if it had a live session. */
      sessionDigest?: string | null;
    }
  }
}

export const SESSIONS_ENDED_CHANNEL = "hourglass:sessions_ended";
/** Entries kept at most; the oldest go first. */
export const MAX_ENTRIES = 10_000;
const RECONNECT_MS = 500;
const RECONNECT_MAX_MS = 30_000;
/**
 * A connection that died without a word (a firewall dropping an idle flow) would otherwise go
 * unnoticed while announcements stopped arriving: the listener asks `select 1` this often and
 * counts it lost if no answer comes within PROBE_TIMEOUT_MS.
 */
const PROBE_MS = 15_000;
const PROBE_TIMEOUT_MS = 5_000;

/** The hex SHA-256 of a token, as Postgres stores it (token_hash) and announces it. */
export const tokenDigest = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");

interface Entry {
  session: string;
  /** Local epoch ms after which the entry is not used. */
  until: number;
}

/** A bearer token's live session. */
export interface BearerSession {
  session: string;
  /** The token's SHA-256 (hex): what logout has the session cache forget. */
  digest: string;
}

export interface SessionLookup {
  /** The live session of a token, or null. Database errors are thrown. */
  sessionOf(token: string): Promise<BearerSession | null>;
  /** Forgets a token (by its digest) at once. */
  forget(digest: string): void;
}

export class SessionCache implements SessionLookup {
  readonly #pool: pg.Pool;
  readonly #listenUrl: string;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  #client: pg.Client | null = null;
  #listening = false;
  /** Bumped by every announcement and every loss of the LISTEN connection. */
  #generation = 0;
  readonly #firstRetryMs: number;
  #retryMs: number;
  #retryTimer: NodeJS.Timeout | null = null;
  #probeTimer: NodeJS.Timeout | null = null;
  #stopped = false;
  readonly #probeMs: number;
  /** Lookups answered here, and those that went to Postgres (for tests). */
  hits = 0;
  misses = 0;

  /** `ttlMs` 0: remember nothing (every request looks its session up). */
  constructor(pool: pg.Pool, options: { listenUrl: string; ttlMs: number; log: Logger; retryMs?: number; probeMs?: number }) {
    this.#pool = pool;
    this.#probeMs = options.probeMs ?? PROBE_MS;
    this.#firstRetryMs = this.#retryMs = options.retryMs ?? RECONNECT_MS;
    this.#listenUrl = options.listenUrl;
    this.#ttlMs = options.ttlMs;
    this.#log = options.log;
  }

  /** Starts listening (in the background: until it listens, every lookup goes to Postgres). */
  start(): void {
    if (this.#ttlMs > 0) void this.#listen();
  }

  /** True while announcements are heard, so entries are kept. */
  get listening(): boolean {
    return this.#listening;
  }

  async sessionOf(token: string): Promise<BearerSession | null> {
    const digest = tokenDigest(token);
    const entry = this.#entries.get(digest);
    if (entry && this.#listening && Date.now() < entry.until) {
      this.hits++;
      return { session: entry.session, digest };
    }
    if (entry) this.#entries.delete(digest);
    this.misses++;
    const generation = this.#generation;
    const { rows } = await this.#pool.query<{ id: string | null; expires_at: Date | null }>(
      "select id, expires_at from app_hidden.session_for_token($1)",
      [token],
    );
    const row = rows[0];
    if (!row?.id || !row.expires_at) return null;
    if (this.#listening && generation === this.#generation) {
      if (this.#entries.size >= MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(digest, { session: row.id, until: Math.min(row.expires_at.getTime(), Date.now() + this.#ttlMs) });
    }
    return { session: row.id, digest };
  }

  forget(digest: string): void {
    this.#generation++;
    this.#entries.delete(digest);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#forget();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    if (this.#probeTimer) clearTimeout(this.#probeTimer);
    const client = this.#client;
    this.#client = null;
    await client?.end().catch(() => {});
  }

  /** Forgets every token (and any lookup under way). */
  #clear(): void {
    this.#generation++;
    this.#entries.clear();
  }

  /** Everything is forgotten and nothing is kept until the next successful LISTEN. */
  #forget(): void {
    this.#listening = false;
    this.#clear();
  }

  #ended(payload: string | undefined): void {
    if (!payload || payload === "*") this.#clear();
    else for (const digest of payload.split(",")) this.forget(digest);
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.#listenUrl,
      application_name: "hourglass-api-sessions",
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    this.#client = client;
    const lost = (err?: unknown) => {
      if (this.#client !== client) return;
      this.#client = null;
      this.#forget();
      if (this.#probeTimer) clearTimeout(this.#probeTimer);
      this.#probeTimer = null;
      client.end().catch(() => {});
      if (this.#stopped) return;
      this.#log.warn("the session listener lost its connection; sessions are looked up on every request until it is back", { err });
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        void this.#listen();
      }, this.#retryMs);
      this.#retryTimer.unref();
      this.#retryMs = Math.min(Math.max(RECONNECT_MAX_MS, this.#firstRetryMs), this.#retryMs * 2);
    };
    client.on("error", lost);
    client.on("end", () => lost());
    client.on("notification", (n) => {
      if (n.channel === SESSIONS_ENDED_CHANNEL) this.#ended(n.payload);
    });
    try {
      await client.connect();
      await client.query(`listen "${SESSIONS_ENDED_CHANNEL}"`);
    } catch (err) {
      lost(err);
      return;
    }
    if (this.#client !== client) return;
    // Whatever was announced before this point was not heard: start empty.
    this.#clear();
    this.#listening = true;
    this.#retryMs = this.#firstRetryMs;
    this.#log.debug("listening for ended sessions");
    const probe = () => {
      this.#probeTimer = setTimeout(() => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer to a probe within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
        });
        Promise.race([client.query("select 1"), timeout]).then(
          () => {
            clearTimeout(timer);
            if (this.#client === client) probe();
          },
          (err: unknown) => {
            clearTimeout(timer);
            lost(err);
          },
        );
      }, this.#probeMs);
      this.#probeTimer.unref();
    };
    probe();
  }
}

/**
 * logout forgets its own token in this process as soon as it has run, so the client's next request
 * is refused here even if the announcement (which reaches every process) has not arrived yet.
 */
export function ForgetOnLogoutPlugin(sessions: SessionLookup): GraphileConfig.Plugin {
  return wrapPlans(
    {
      Mutation: {
        logout(plan) {
          const $result = plan();
          sideEffect([context().get("sessionDigest"), $result], ([digest]) => {
            if (typeof digest === "string") sessions.forget(digest);
          });
          return $result;
        },
      },
    },
    { name: "ForgetOnLogoutPlugin", description: "Forgets a logged-out token in the session cache" },
  );
}
