// Bearer sessions: `Authorization: Bearer <session token>` is checked against the stored hash
// before the request reaches GraphQL. A bad or expired token gets HTTP 401 with a generic body
// (never a library message or a stack); no header means an anonymous request.
import type { NextFunction, Request, Response } from "express";
import type { WithPgClient } from "postgraphile/@dataplan/pg";
import type { Logger } from "../log.ts";
import { UNAVAILABLE } from "./errors.ts";
import type { BearerSession, SessionLookup } from "./sessions.ts";

const sessions = new WeakMap<Request, BearerSession>();

/** The session established for this request, if any. */
export function sessionOf(req: Request | undefined): BearerSession | null {
  return (req && sessions.get(req)) ?? null;
}

const BEARER = /^Bearer ([A-Za-z0-9_-]{16,256})$/;

function reject(res: Response, status: number, code: string, message: string) {
  if (status === 401) res.setHeader("WWW-Authenticate", 'Bearer error="invalid_token"');
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}

export type BearerCheck = BearerSession | { error: "invalid" } | null;

/**
 * The session behind an Authorization value: null when there is none (anonymous), an error when
 * it is malformed, unknown or expired. Database errors are thrown.
 */
export async function checkBearer(sessions: SessionLookup, header: string | undefined): Promise<BearerCheck> {
  if (header === undefined || header === "") return null;
  const match = BEARER.exec(header.trim());
  if (!match) return { error: "invalid" };
  return (await sessions.sessionOf(match[1]!)) ?? { error: "invalid" };
}

export function authenticate(lookup: SessionLookup, log: Logger) {
  return async (req: Request, res: Response, next: NextFunction) => {
    try {
      const check = await checkBearer(lookup, req.headers.authorization);
      if (check === null) return next();
      if ("error" in check) return reject(res, 401, "UNAUTHENTICATED", "Invalid or expired session token.");
      sessions.set(req, check);
      next();
    } catch (err) {
      log.error("session lookup failed", { err });
      reject(res, 503, UNAVAILABLE.code, UNAVAILABLE.message);
    }
  };
}

/**
 * Raises ADMIN (app_hidden.require_admin, SQL's own check) unless the request's session is an
 * admin's: for answers given before any SQL of the request's own runs.
 */
export async function requireAdmin(withPgClient: WithPgClient, pgSettings: Parameters<WithPgClient>[0] | undefined): Promise<void> {
  await withPgClient(pgSettings ?? null, (client) => client.query({ text: "select app_hidden.require_admin()" }));
}
