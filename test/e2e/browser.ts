// For the end-to-end tests: the dashboard's build (made first when it is missing or older than its
// sources, as `npm run build` would), headless Chromium from the Debian package, and screenshots.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { chromium, type Browser, type Page } from "playwright-core";

const ROOT = path.resolve(import.meta.dirname, "../..");
const SOURCES = path.join(ROOT, "src/dashboard");
const BUILT_INDEX = path.join(ROOT, "dist/dashboard/index.html");
const CHROMIUM = "/usr/bin/chromium";
export const SCREENSHOTS = path.join(ROOT, "test-results/screenshots");

async function newestSource(): Promise<number> {
  const entries = await fs.readdir(SOURCES, { recursive: true, withFileTypes: true });
  const times = await Promise.all(
    entries.filter((e) => e.isFile()).map(async (e) => (await fs.stat(path.join(e.parentPath, e.name))).mtimeMs),
  );
  return Math.max(...times);
}

/** Runs the Vite build when dist/dashboard is missing or older than src/dashboard. */
export async function ensureDashboardBuilt(): Promise<void> {
  const built = await fs.stat(BUILT_INDEX).then((s) => s.mtimeMs, () => 0);
  if (built >= (await newestSource())) return;
  // In a process of its own, with the project's Node, exactly as `npm run build` runs it.
  await promisify(execFile)(
    path.join(ROOT, "node_modules/.bin/node"),
    [path.join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--config", path.join(SOURCES, "vite.config.ts"), "--logLevel", "warn"],
    { cwd: ROOT },
  );
}

export async function launchChromium(): Promise<Browser> {
  try {
    await fs.access(CHROMIUM, fs.constants.X_OK);
  } catch {
    throw new Error(`The end-to-end tests drive the system Chromium at ${CHROMIUM}, which is missing: apt-get install chromium`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    // As root, without a sandbox; and no background traffic (updates, sync, QUIC probes) to a
    // network that is not there.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await fs.mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
