// Bearer sessions: `Authorization: Bearer <session token>` is checked against the stored hash
// before the request reaches GraphQL. A bad or expired token gets HTTP 401 with a generic body
// (never a library message or a stack); no header means an anonymous request.
import type { NextFunction, Request, Response } from "express";
import type pg from "pg";
import type { Logger } from "../log.ts";

const sessions = new WeakMap<Request, string>();

/** The session id established for this request, if any. */
export function sessionOf(req: Request | undefined): string | null {
  return (req && sessions.get(req)) ?? null;
}

const BEARER = /^Bearer ([A-Za-z0-9_-]{16,256})$/;

function reject(res: Response, status: number, code: string, message: string) {
  if (status === 401) res.setHeader("WWW-Authenticate", 'Bearer error="invalid_token"');
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}

export function authenticate(pool: pg.Pool, log: Logger) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const header = req.headers.authorization;
    if (header === undefined || header === "") return next();
    const match = BEARER.exec(header.trim());
    if (!match) return reject(res, 401, "UNAUTHENTICATED", "Invalid or expired session token.");
    try {
      const { rows } = await pool.query<{ id: string | null }>("select app_hidden.session_id_for_token($1) as id", [match[1]]);
      const id = rows[0]?.id;
      if (!id) return reject(res, 401, "UNAUTHENTICATED", "Invalid or expired session token.");
      sessions.set(req, id);
      next();
    } catch (err) {
      log.error("session lookup failed", { err });
      reject(res, 503, "UNAVAILABLE", "The service is temporarily unavailable.");
    }
  };
}
