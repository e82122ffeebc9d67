// Crontab sweep (see crontab), every 6 hours (00, 06, 12, 18 UTC): deletes up to 1,000 expired
// uploads — the file, then its row. A file already gone is fine; a file that cannot be deleted
// keeps its row (and is retried next run).
import fs from "node:fs/promises";
import path from "node:path";
import { defineTask, PRIORITY } from "../src/worker/task.ts";
import { sweepPayload } from "../src/worker/sweep.ts";

export default defineTask({
  description: "Deletes expired uploaded files and their rows, at most 1,000 per run.",
  payload: sweepPayload,
  priority: PRIORITY.maintenance,
  maxAttempts: 3,
  timeLimitMs: 120_000,
  async run({ batchSize }, { query, config, log }) {
    const { rows } = await query<{ id: string; storage_key: string }>(
      "select id::text, storage_key from app_private.expired_uploads($1)",
      [batchSize ?? 1000],
    );
    const done: string[] = [];
    let alreadyGone = 0;
    let failed = 0;
    for (const r of rows) {
      try {
        await fs.unlink(path.join(config.uploads.dir, r.storage_key));
        done.push(r.id);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          alreadyGone++;
          done.push(r.id);
        } else {
          failed++;
          log.warn("could not delete an expired upload; its row stays", { file: r.id, err });
        }
      }
    }
    const { rows: d } = await query<{ deleted: number; remaining: string }>(
      "select deleted, remaining from app_private.forget_uploads($1::bigint[])",
      [done],
    );
    const result = { deleted: d[0]!.deleted, remaining: Number(d[0]!.remaining), alreadyGone, failed };
    log.info("swept expired uploads", result);
    return result;
  },
});
