// How the API serves the dashboard's build: index.html for every app path and for /login, assets
// cached for good, strict security headers on all of it, and a plain 503 (logged once) when the
// build is missing. Against a small build of its own in a temporary directory.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:http";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dashboardRoutes } from "../../src/api/dashboard.ts";
import { createLogger } from "../../src/log.ts";

let dir: string;
let server: Server;
let base: string;
const logged: string[] = [];

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-dashboard-"));
  const app = express();
  app.use(dashboardRoutes({ log: createLogger({ level: "info", format: "json", write: (l) => logged.push(l) }), dir }));
  app.use((_req, res) => void res.status(404).send("elsewhere"));
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

function expectSecurityHeaders(res: Response) {
  const csp = res.headers.get("content-security-policy") ?? "";
  expect(csp).toContain("default-src 'self'");
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).toContain(`connect-src 'self' ws://${new URL(base).host} wss://${new URL(base).host}`);
  expect(csp).toContain("frame-ancestors 'none'");
  expect(res.headers.get("referrer-policy")).toBe("no-referrer");
  expect(res.headers.get("x-frame-options")).toBe("DENY");
}

describe("serving the dashboard", () => {
  it("answers 503 with what to run while the build is missing, and logs it once", async () => {
    for (const p of ["/dashboard", "/dashboard/jobs", "/login?token=x"]) {
      const res = await fetch(base + p);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/npm run build/);
      expectSecurityHeaders(res);
    }
    expect(logged.filter((l) => l.includes("not built"))).toHaveLength(1);
  });

  it("serves index.html for the app's paths and /login, revalidated (never stored for /login), assets cached for good", async () => {
    await fs.mkdir(path.join(dir, "assets"), { recursive: true });
    await fs.writeFile(path.join(dir, "index.html"), '<!doctype html><script type="module" src="/dashboard/assets/app-1a2b.js"></script>');
    await fs.writeFile(path.join(dir, "assets", "app-1a2b.js"), "console.log(1)");

    for (const p of ["/dashboard", "/dashboard/", "/dashboard/jobs", "/dashboard/jobs/deeper?state=failed"]) {
      const res = await fetch(base + p);
      expect([p, res.status]).toEqual([p, 200]);
      expect(res.headers.get("content-type")).toMatch(/^text\/html/);
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(await res.text()).toContain("app-1a2b.js");
      expectSecurityHeaders(res);
    }
    const login = await fetch(`${base}/login?token=abc`);
    expect(login.status).toBe(200);
    expect(login.headers.get("cache-control")).toBe("no-store");
    expectSecurityHeaders(login);

    const asset = await fetch(`${base}/dashboard/assets/app-1a2b.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("content-type")).toMatch(/javascript/);
    expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expectSecurityHeaders(asset);

    // A stale page asking for an old asset gets a 404, not the app's HTML.
    const gone = await fetch(`${base}/dashboard/assets/app-0000.js`);
    expect(gone.status).toBe(404);
    expect(gone.headers.get("content-type")).toMatch(/^text\/plain/);

    // Other paths are not the dashboard's.
    expect(await (await fetch(`${base}/dashboardx`)).text()).toBe("elsewhere");
    expect(await (await fetch(`${base}/graphql`)).text()).toBe("elsewhere");
  });
});
