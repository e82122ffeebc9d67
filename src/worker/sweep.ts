// Shared loop for retention sweeps: call a SQL sweep function (deletes at most one batch per call,
// each call its own short transaction) until it deletes less than a full batch, the time budget
// is spent or the worker is stopping; report {deleted, remaining} for the job history.
import type { JobHelpers } from "graphile-worker";
import { z } from "zod";
import type { Logger } from "../log.ts";

export const DEFAULT_BATCH_SIZE = 1000;
const BUDGET_MS = 30_000;

/** Payload every sweep task accepts: an optional batch size (crontab entries pass none). */
export const sweepPayload = z.object({ batchSize: z.number().int().min(1).max(100_000).optional() });

export interface SweepResult {
  [key: string]: number;
  deleted: number;
  remaining: number;
}

/**
 * `fn` is a SQL function `(batch_size integer[, args...], out deleted integer, out remaining bigint)`
 * — a constant from the calling task, never input.
 */
export async function sweep(
  query: JobHelpers["query"],
  fn: `app_private.sweep_${string}`,
  options: { batchSize?: number; signal: AbortSignal; log: Logger; what: string; args?: unknown[] },
): Promise<SweepResult> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const deadline = Date.now() + BUDGET_MS;
  let deleted = 0;
  let remaining = 0;
  for (;;) {
    const args = options.args ?? [];
    const placeholders = args.map((_, i) => `, $${i + 2}`).join("");
    const { rows } = await query<{ deleted: number; remaining: string }>(
      `select deleted, remaining from ${fn}($1${placeholders})`,
      [batchSize, ...args],
    );
    deleted += rows[0]!.deleted;
    remaining = Number(rows[0]!.remaining);
    if (rows[0]!.deleted < batchSize || Date.now() > deadline || options.signal.aborted) break;
  }
  options.log.info(`swept ${options.what}`, { deleted, remaining });
  return { deleted, remaining };
}
