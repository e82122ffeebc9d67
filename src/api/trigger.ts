// triggerTask checks the payload against the task's own schema before anything is enqueued, so a
// client gets a coded error (TKPAY) at once instead of a job that fails permanently later. The SQL
// function behind it (app_public.trigger_task) checks that the task exists and that the payload
// is an object; DBAs calling it directly get the full check when a worker runs the job.
//
// The refusal names the task's payload fields, so it is given to admins only: before answering
// TKPAY the caller's admin check runs in SQL (app_hidden.require_admin, ADMIN for anyone else). A
// payload that suits its task needs no such round trip: the SQL function checks the caller itself.
import { context, sideEffect } from "postgraphile/grafast";
import { wrapPlans } from "postgraphile/utils";
import type { ResolvedTask } from "../worker/task.ts";
import { requireAdmin } from "./auth.ts";

/** An error with one of the project's codes (migrations/ERROR_CODES.md): passed through to clients. */
export class CodedError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** Null when the payload suits the task (or the task is not one this process knows: SQL decides). */
export function payloadProblem(tasks: ReadonlyMap<string, ResolvedTask>, identifier: unknown, payload: unknown): string | null {
  const task = typeof identifier === "string" ? tasks.get(identifier) : undefined;
  if (!task) return null;
  const value = typeof payload === "string" ? safeParse(payload) : (payload ?? {});
  const parsed = task.payload.safeParse(value);
  if (parsed.success) return null;
  return `Invalid payload for ${task.identifier}: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`;
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function TriggerTaskPayloadPlugin(tasks: readonly ResolvedTask[]): GraphileConfig.Plugin {
  const byId = new Map(tasks.map((t) => [t.identifier, t]));
  return wrapPlans(
    {
      Mutation: {
        triggerTask(plan, _$source, fieldArgs) {
          const $identifier = fieldArgs.getRaw(["input", "identifier"]);
          const $payload = fieldArgs.getRaw(["input", "payload"]);
          // Steps planned after a side effect depend on it: a throw here stops the mutation.
          sideEffect(
            [$identifier, $payload, context().get("withPgClient"), context().get("pgSettings")],
            async ([identifier, payload, withPgClient, pgSettings]) => {
              const problem = payloadProblem(byId, identifier, payload);
              if (!problem) return;
              await requireAdmin(withPgClient, pgSettings);
              throw new CodedError("TKPAY", problem);
            },
          );
          return plan();
        },
      },
    },
    { name: "TriggerTaskPayloadPlugin", description: "Checks triggerTask's payload against the task's schema" },
  );
}
