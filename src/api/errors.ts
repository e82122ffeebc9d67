// Error masking for GraphQL responses. Only errors we raise on purpose reach clients: the
// project's five-letter SQL codes (registry: migrations/ERROR_CODES.md) with their messages, and a
// few standard PostgreSQL errors with a fixed, safe message. Everything else is logged with a
// reference and returned as "An unexpected error occurred (reference ...)".
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { GraphQLError } from "postgraphile/graphql";
import { isSafeError } from "postgraphile/grafast";
import type { Logger } from "../log.ts";
import { isUnavailable } from "../db/pool.ts";

export const ERROR_CODES_FILE = path.resolve(import.meta.dirname, "../../migrations/ERROR_CODES.md");

/** Standard SQLSTATEs a client may see, each with a message that reveals nothing internal. */
export const STANDARD_ERRORS: Readonly<Record<string, { code: string; message: string }>> = {
  "23505": { code: "UNIQUE_VIOLATION", message: "A record with the same unique value already exists." },
  "23503": { code: "FOREIGN_KEY_VIOLATION", message: "The record refers to something that does not exist, or is still referred to." },
  "23514": { code: "CHECK_VIOLATION", message: "A value is not allowed." },
  "23502": { code: "NOT_NULL_VIOLATION", message: "A required value is missing." },
  "22P02": { code: "INVALID_INPUT", message: "A value has the wrong format." },
  "42501": { code: "PERMISSION_DENIED", message: "Permission denied." },
  "57014": { code: "STATEMENT_TIMEOUT", message: "The request took too long and was cancelled." },
};

/** The database could not be reached for a request, or no connection was free in time. */
export const UNAVAILABLE = { code: "UNAVAILABLE", message: "The service is temporarily unavailable: try again shortly." };

/** Reads the codes from the registry's table rows: `| ABCDE | ... |`. */
export function loadErrorCodes(file = ERROR_CODES_FILE): Set<string> {
  const codes = new Set<string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^\|\s*([A-Z]{5})\s*\|/.exec(line);
    if (m) codes.add(m[1]!);
  }
  return codes;
}

/** Logs an unexpected error under a fresh reference and returns what a client may see of it. */
export function unexpected(log: Logger, msg: string, err: unknown, fields: Record<string, unknown> = {}) {
  const reference = randomBytes(6).toString("hex");
  log.error(msg, { reference, ...fields, err });
  return { message: `An unexpected error occurred (reference ${reference}).`, extensions: { code: "INTERNAL_ERROR", reference } };
}

function rebuilt(error: GraphQLError, message: string, extensions: Record<string, unknown>): GraphQLError {
  return new GraphQLError(message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    extensions,
  });
}

export function makeMaskError(codes: ReadonlySet<string>, log: Logger): (error: GraphQLError) => GraphQLError {
  return (error) => {
    const original = error.originalError;
    // Errors GraphQL itself produced (syntax, validation, variables) are safe as they are.
    if (!original || original instanceof GraphQLError) return error;
    if (isSafeError(original)) return error;
    const code = (original as { code?: unknown }).code;
    if (typeof code === "string") {
      if (codes.has(code)) return rebuilt(error, original.message, { code });
      const standard = STANDARD_ERRORS[code];
      if (standard) {
        const constraint = (original as { constraint?: unknown }).constraint;
        return rebuilt(error, standard.message, {
          code: standard.code,
          ...(typeof constraint === "string" ? { constraint } : {}),
        });
      }
    }
    // The database unreachable (down, restarting, a network cut) or every connection busy past the
    // pool's wait: nothing the request did, and worth trying again.
    if (isUnavailable(original)) {
      log.warn("a GraphQL request could not reach the database", { path: error.path?.join("."), err: original });
      return rebuilt(error, UNAVAILABLE.message, { code: UNAVAILABLE.code });
    }
    const masked = unexpected(log, "masked an unexpected error in a GraphQL request", original, { path: error.path?.join(".") });
    return rebuilt(error, masked.message, masked.extensions);
  };
}
