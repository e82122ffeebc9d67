// The operations dashboard's HTTP side. Serves the app built by `npm run build` (Vite, from
// src/dashboard) out of dist/dashboard: hashed assets under /dashboard/assets/ cached for a year,
// index.html for /dashboard and every path below it (the app routes in the browser), revalidated on
// each load so a new build is picked up at once, and for /login, where sign-in links land
// (<APP_URL>/login?token=...). Every answer carries a strict Content-Security-Policy (own scripts
// and styles only, no inline script, GraphQL over HTTP and websockets to this host only) and is
// never framed or sent with a Referer (the sign-in token is in the URL).
import { access } from "node:fs/promises";
import path from "node:path";
import express, { type Request, type Response } from "express";
import type { Logger } from "../log.ts";

const BUILT = path.resolve(import.meta.dirname, "../../dist/dashboard");

// A Host header we can safely echo into the policy (name or IP literal, optional port).
const HOST = /^(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;

function securityHeaders(req: Request, res: Response): void {
  const host = req.headers.host;
  // 'self' covers same-host websockets in current browsers; older ones need ws:/wss: spelled out.
  const sockets = host && HOST.test(host) ? ` ws://${host} wss://${host}` : "";
  res.setHeader(
    "Content-Security-Policy",
    [
      "default-src 'self'",
      "script-src 'self'",
      "style-src 'self'",
      `connect-src 'self'${sockets}`,
      "object-src 'none'",
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join("; "),
  );
  res.setHeader("Referrer-Policy", "no-referrer");
  res.setHeader("X-Frame-Options", "DENY");
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
}

export interface DashboardOptions {
  log: Logger;
  /** The built app; dist/dashboard at the repository root unless given (tests). */
  dir?: string;
}

export function dashboardRoutes({ log, dir = BUILT }: DashboardOptions): express.Router {
  const index = path.join(dir, "index.html");
  const router = express.Router();
  let reported = false;

  router.use(["/dashboard", "/login"], async (req, res, next) => {
    securityHeaders(req, res);
    try {
      await access(index);
      reported = false;
      next();
    } catch {
      if (!reported) {
        log.warn("the dashboard is not built: /dashboard answers 503 until `npm run build` has written it", { dir });
        reported = true;
      }
      res
        .status(503)
        .type("text/plain")
        .setHeader("Cache-Control", "no-store")
        .send(`The dashboard is not built. Run \`npm run build\` (it writes ${path.relative(process.cwd(), dir) || dir}), then reload.\n`);
    }
  });

  // File names carry a hash of their content: a changed file gets a new name.
  router.use(
    "/dashboard/assets",
    express.static(path.join(dir, "assets"), { index: false, redirect: false, immutable: true, maxAge: "365d" }),
    (_req: Request, res: Response) => {
      res.status(404).type("text/plain").setHeader("Cache-Control", "no-store").send("Not found\n");
    },
  );

  const sendIndex = (cacheControl: string) => (_req: Request, res: Response, next: express.NextFunction) => {
    res.setHeader("Cache-Control", cacheControl);
    res.sendFile(index, { cacheControl: false }, (err) => {
      if (err && !res.headersSent) next(err);
    });
  };
  router.get(["/dashboard", "/dashboard/*rest"], sendIndex("no-cache"));
  // The sign-in token is in this URL: no cache may keep the page.
  router.get("/login", sendIndex("no-store"));
  return router;
}
