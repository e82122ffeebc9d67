// The PostGraphile preset: Amber + connection filter + aggregates over app_public only.
// Each request runs as the visitor role with the request's session id as a setting, under a
// per-request statement_timeout; RLS in SQL decides what it may see and do.
import type { Request } from "express";
import type pg from "pg";
import { makePgService, type PgSubscriber } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PostGraphileConnectionFilterPreset } from "postgraphile-plugin-connection-filter";
import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import type { GraphQLError } from "postgraphile/graphql";
import type { ResolvedTask } from "../worker/task.ts";
import { checkBearer, sessionOf } from "./auth.ts";
import { ForgetOnLogoutPlugin, type BearerSession, type SessionLookup } from "./sessions.ts";
import { JOB_EVENTS_CHANNEL, JobEventsPlugin, type EventLimits, type JobEventListeners } from "./events.ts";
import type { Logger } from "../log.ts";
import { TriggerTaskPayloadPlugin } from "./trigger.ts";
import { SafeError } from "postgraphile/grafast";

export interface PresetOptions {
  pool: pg.Pool;
  /** Bearer tokens to sessions (websocket subscriptions check theirs here). */
  sessions: SessionLookup;
  /** LISTEN/NOTIFY for subscriptions; the caller releases it (PostGraphile's release() does not). */
  pgSubscriber: PgSubscriber;
  /** Tells Postgres to publish job events while subscriptions are live. */
  eventListeners: JobEventListeners;
  visitorRole: string;
  statementTimeoutMs: number;
  sessionLifetimeDays: number;
  development: boolean;
  maskError: (error: GraphQLError) => GraphQLError;
  /** The tasks whose payload schemas triggerTask checks. */
  tasks: readonly ResolvedTask[];
  /** jobEvents' limits: how often a live subscription re-checks its session, how far behind its client may fall. */
  eventLimits?: EventLimits;
  log: Logger;
}

interface WebSocketRequestContext {
  request?: Request;
  normalizedConnectionParams?: Record<string, string | string[] | undefined>;
}

/**
 * The session of a websocket subscription, from connectionParams { authorization: "Bearer ..." }
 * (browsers cannot set headers on a websocket): the same check as the HTTP middleware's.
 */
async function websocketSession(sessions: SessionLookup, ws: WebSocketRequestContext): Promise<BearerSession | null> {
  const header = ws.normalizedConnectionParams?.authorization;
  const check = await checkBearer(sessions, Array.isArray(header) ? header[0] : header);
  if (check === null) return null;
  if ("error" in check) throw new SafeError("Invalid or expired session token.", { code: "UNAUTHENTICATED" });
  return check;
}

export function makePreset(o: PresetOptions): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset, PostGraphileConnectionFilterPreset, PgAggregatesPreset],
    plugins: [
      TriggerTaskPayloadPlugin(o.tasks),
      JobEventsPlugin({
        listeners: o.eventListeners,
        log: o.log,
        limits: o.eventLimits,
        notify: async (payload) => void (await o.pool.query("select pg_notify($1, $2)", [JOB_EVENTS_CHANNEL, payload])),
      }),
      ForgetOnLogoutPlugin(o.sessions),
    ],
    pgServices: [makePgService({ pool: o.pool, pgSubscriber: o.pgSubscriber, schemas: ["app_public"] })],
    grafserv: {
      graphqlPath: "/graphql",
      graphiql: o.development,
      graphiqlPath: "/graphiql",
      graphiqlOnGraphQLGET: false,
      watch: false,
      maskError: o.maskError,
      // Subscriptions (jobEvents) over graphql-ws at the same path.
      websockets: true,
    },
    grafast: {
      // Plans and SQL in responses only when a developer opts in (Ruru's explain toggle sends the header).
      explain: false,
      async context(requestContext) {
        const ws = (requestContext as { ws?: WebSocketRequestContext }).ws;
        const req = ws ? ws.request : (requestContext as { expressv4?: { req: Request } }).expressv4?.req;
        const session = ws ? await websocketSession(o.sessions, ws) : sessionOf(req);
        return {
          sessionDigest: session?.digest ?? null,
          pgSettings: {
            role: o.visitorRole,
            "hourglass.session_id": session?.session ?? "",
            // For per-client rate limits (requestLoginLink) and new sessions' lifetime (login).
            "hourglass.client_address": req?.socket.remoteAddress ?? "",
            "hourglass.session_lifetime": `${o.sessionLifetimeDays} days`,
            statement_timeout: String(o.statementTimeoutMs),
          },
        };
      },
    },
  };
}
