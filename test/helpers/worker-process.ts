// A worker in a process of its own, for tests that SIGKILL it. Runs one task, t_slow, which waits
// SLOW_MS and then records its payload's n in public.t_done. Prints "READY <pool id>" once started.
import { z } from "zod";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { defineTask, resolveTask } from "../../src/worker/task.ts";

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

if (import.meta.url === `file://${process.argv[1]}`) {
  const config = loadConfig(process.env);
  const log = createLogger({ level: "warn", format: "pretty" });
  const worker = await startWorker({ ownerUrl: config.databaseUrl!, config, tasks: [slowTask], log, crontabFile: null });
  console.log(`READY ${worker.heartbeat.id}`);
  process.on("SIGTERM", () => void worker.stop().then(() => process.exit(0)));
}
