// The PostGraphile preset: Amber + connection filter + aggregates over app_public only.
// Each request runs as the visitor role with the request's session id as a setting, under a
// per-request statement_timeout; RLS in SQL decides what it may see and do.
import type { Request } from "express";
import type pg from "pg";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PostGraphileConnectionFilterPreset } from "postgraphile-plugin-connection-filter";
import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import type { GraphQLError } from "postgraphile/graphql";
import type { ResolvedTask } from "../worker/task.ts";
import { sessionOf } from "./auth.ts";
import { TriggerTaskPayloadPlugin } from "./trigger.ts";

export interface PresetOptions {
  pool: pg.Pool;
  visitorRole: string;
  statementTimeoutMs: number;
  sessionLifetimeDays: number;
  development: boolean;
  maskError: (error: GraphQLError) => GraphQLError;
  /** The tasks whose payload schemas triggerTask checks. */
  tasks: readonly ResolvedTask[];
}

export function makePreset(o: PresetOptions): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset, PostGraphileConnectionFilterPreset, PgAggregatesPreset],
    plugins: [TriggerTaskPayloadPlugin(o.tasks)],
    pgServices: [makePgService({ pool: o.pool, schemas: ["app_public"] })],
    grafserv: {
      graphqlPath: "/graphql",
      graphiql: o.development,
      graphiqlPath: "/graphiql",
      graphiqlOnGraphQLGET: false,
      watch: false,
      maskError: o.maskError,
    },
    grafast: {
      // Plans and SQL in responses only when a developer opts in (Ruru's explain toggle sends the header).
      explain: false,
      context(requestContext) {
        const req = (requestContext as { expressv4?: { req: Request } }).expressv4?.req;
        return {
          pgSettings: {
            role: o.visitorRole,
            "hourglass.session_id": sessionOf(req) ?? "",
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
