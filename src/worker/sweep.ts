// Shared loop for sweeps: call a SQL sweep function (handles at most one batch per call, each call
// its own short transaction) until it handles less than a full batch, the time budget is spent or
// the worker is stopping; report {deleted, remaining} (or {expired, remaining}, ...) for the job
// history.
import type { JobHelpers } from "graphile-worker";
import { z } from "zod";
import type { Logger } from "../log.ts";

export const DEFAULT_BATCH_SIZE = 1000;
const BUDGET_MS = 30_000;

/** Payload every sweep task accepts: an optional batch size (crontab entries pass none). */
export const sweepPayload = z.object({ batchSize: z.number().int().min(1).max(100_000).optional() });

export type SweepResult<K extends string = "deleted"> = Record<K | "remaining", number>;

/**
 * `fn` is a SQL function `(batch_size integer[, args...], out <count> integer, out remaining bigint)`
 * — a constant from the calling task, never input. `count` names its first out parameter
 * (`deleted` unless given).
 */
export async function sweep<K extends string = "deleted">(
  query: JobHelpers["query"],
  fn: `app_private.sweep_${string}`,
  options: { batchSize?: number; signal: AbortSignal; log: Logger; what: string; args?: unknown[]; count?: K },
): Promise<SweepResult<K>> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const count = options.count ?? "deleted";
  if (!/^[a-z_]+$/.test(count)) throw new Error(`sweep: bad count column ${count}`);
  const deadline = Date.now() + BUDGET_MS;
  let done = 0;
  let remaining = 0;
  for (;;) {
    const args = options.args ?? [];
    const placeholders = args.map((_, i) => `, $${i + 2}`).join("");
    const { rows } = await query<{ done: number; remaining: string }>(
      `select ${count} as done, remaining from ${fn}($1${placeholders})`,
      [batchSize, ...args],
    );
    done += rows[0]!.done;
    remaining = Number(rows[0]!.remaining);
    if (rows[0]!.done < batchSize || Date.now() > deadline || options.signal.aborted) break;
  }
  const result = { [count]: done, remaining } as SweepResult<K>;
  options.log.info(`swept ${options.what}`, result);
  return result;
}
