// Builds the operations dashboard (src/dashboard/app, Preact + urql) into dist/dashboard, which the
// API serves at /dashboard (src/api/dashboard.ts): `npm run build`. While working on it,
// `npx vite --config src/dashboard/vite.config.ts` serves it with hot reload and sends /graphql
// (HTTP and websockets) to an API on the default port.
import path from "node:path";
import { defineConfig } from "vite";

const root = import.meta.dirname;

export default defineConfig({
  root,
  base: "/dashboard/",
  publicDir: false,
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: path.resolve(root, "../../dist/dashboard"),
    emptyOutDir: true,
    // Browsers from 2022 on: native modules, top-level await, no polyfills to ship.
    target: "es2022",
    // Every asset as a file of its own: the CSP allows no data: URLs.
    assetsInlineLimit: 0,
  },
  server: {
    proxy: { "/graphql": { target: "http://127.0.0.1:5678", ws: true } },
  },
  plugins: [
    {
      // Sign-in links are <APP_URL>/login?token=...: with APP_URL pointing here, the dev server
      // answers /login with the app, as the API does.
      name: "hourglass-login-route",
      configureServer(server) {
        server.middlewares.use((req, _res, next) => {
          if (req.url === "/login" || req.url?.startsWith("/login?")) req.url = "/dashboard/";
          next();
        });
      },
    },
  ],
});
