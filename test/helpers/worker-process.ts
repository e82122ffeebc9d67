// A worker in a process of its own, for tests that SIGKILL it, run several side by side or cut
// its database connections. Runs two tasks: t_slow waits SLOW_MS and then records its payload's n
// in public.t_done; t_tick records the crontab tick it runs for (its cron ts) in public.t_ticks.
// CRONTAB_FILE names a crontab to run (none by default). Prints "READY <pool id> <label>" once started,
// and "CRON <tick ms>" each time its cron has scheduled a tick (every process schedules every
// tick; graphile-worker keeps one job per tick). Like `npm start`, it exits (code 1) when its
// runner stops with an error, so a test sees a dead worker as a dead process.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { z } from "zod";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";
import type { TestDb } from "./db.ts";

const slowMs = Number(process.env.SLOW_MS ?? 500);
export const slowTask = resolveTask(
  "t_slow",
  defineTask({
    description: "waits, then records that it ran (test)",
    payload: z.object({ n: z.number().int() }),
    async run({ n }, { query, signal }) {
      await new Promise((resolve, reject) => {
        const t = setTimeout(resolve, slowMs);
        signal.addEventListener("abort", () => (clearTimeout(t), reject(new Error("aborted"))), { once: true });
      });
      await query(
        "insert into public.t_done (n, worker) values ($1, $2) on conflict (n) do update set runs = public.t_done.runs + 1",
        [n, `${process.pid}`],
      );
    },
  }),
);

export const tickTask = resolveTask(
  "t_tick",
  defineTask({
    description: "records the crontab tick it runs for (test)",
    payload: z.object({}),
    async run(_payload, { query, cron }) {
      await query("insert into public.t_ticks (ts, worker) values ($1, $2)", [cron?.ts ?? null, `${process.pid}`]);
    },
  }),
);

export interface WorkerProcess {
  child: ChildProcess;
  poolId: string;
  /** host:pid:suffix, as in job_runs.worker_id. */
  label: string;
  /** Ticks (epoch ms) this process's cron scheduled, in order. */
  cronTicks: number[];
  /** Resolves with the exit code when the process ends. */
  exited: Promise<number | null>;
  /** Graceful stop (SIGTERM; SIGKILL if it has not exited 20 s later); resolves with the exit code. */
  stop(): Promise<number | null>;
}

const NODE = path.resolve(import.meta.dirname, "../../node_modules/.bin/node");

/** Starts this file as a worker process against the test database; resolves once it is READY. */
export function spawnWorkerProcess(db: TestDb, env: Record<string, string> = {}): Promise<WorkerProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [path.resolve(import.meta.dirname, "worker-process.ts")], {
      env: {
        ...process.env,
        NODE_ENV: "test",
        DATABASE_URL: db.ownerUrl,
        AUTHENTICATOR_PASSWORD: db.run.authenticatorPassword,
        DATABASE_AUTHENTICATOR: db.run.roles.authenticator,
        DATABASE_VISITOR: db.run.roles.visitor,
        LOG_LEVEL: "error",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const cronTicks: number[] = [];
    let ready: WorkerProcess | null = null;
    let buffer = "";
    child.stdout!.on("data", (d) => {
      buffer += d;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        const m = /^(READY|CRON) (\S+)(?: (\S+))?$/.exec(line);
        if (m?.[1] === "CRON") cronTicks.push(Number(m[2]));
        if (m?.[1] === "READY" && !ready) {
          ready = {
            child,
            poolId: m[2]!,
            label: m[3]!,
            cronTicks,
            exited,
            stop: () => {
              if (child.exitCode === null && child.signalCode === null) {
                child.kill("SIGTERM");
                const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
                void exited.finally(() => clearTimeout(kill));
              }
              return exited;
            },
          };
          resolve(ready);
        }
      }
    });
    void exited.then((code) => {
      if (!ready) reject(new Error(`worker process exited before it was ready (${code})`));
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const config = loadConfig(process.env);
  const log = createLogger({ level: config.log.level, format: "pretty" });
  const worker = await startWorker({
    ownerUrl: config.databaseUrl!,
    config,
    tasks: [slowTask, tickTask],
    log,
    crontabFile: process.env.CRONTAB_FILE || null,
  });
  worker.runner.events.on("cron:scheduled", ({ timestamp }) => console.log(`CRON ${timestamp}`));
  console.log(`READY ${worker.heartbeat.id} ${worker.workerId}`);
  const exit = (code: number) => void worker.stop().finally(() => process.exit(code));
  void worker.died.then(() => exit(1));
  process.on("SIGTERM", () => exit(0));
}
