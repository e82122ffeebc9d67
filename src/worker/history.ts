// The job history write path. Writing a row when a job starts and updating it when it ends would
// cost two statements per job and cap throughput far below graphile-worker's batched path, so
// records are buffered and written in batches: a run that starts and ends within one flush
// interval is a single row in a multi-row insert; a longer run is written as `running` at the
// next flush and completed by an upsert when it ends. close() writes everything before the pool
// ends, so a clean shutdown loses nothing and leaves nothing `running`.
import type pg from "pg";
import type { Logger } from "../log.ts";

export type Outcome =
  | "running"
  | "succeeded"
  | "failed_retrying"
  | "failed_permanently"
  | "skipped"
  | "abandoned"
  | "timed_out";

export interface RunRecord {
  id: string;
  jobId: string;
  task: string;
  queueName: string | null;
  jobKey: string | null;
  attempt: number;
  maxAttempts: number;
  /** JSON text, already redacted. */
  payload: string | null;
  workerId: string;
  runAt: Date | null;
  startedAt: Date;
  finishedAt: Date | null;
  outcome: Outcome;
  error: string | null;
  /** JSON text. */
  result: string | null;
}

const UPSERT = `
insert into app_public.job_runs
  (id, job_id, task_identifier, queue_name, job_key, attempt, max_attempts, payload,
   worker_id, run_at, started_at, finished_at, outcome, error, result)
select * from unnest(
  $1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::integer[], $8::jsonb[],
  $9::text[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[], $15::jsonb[])
on conflict (id) do update set
  finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error, result = excluded.result
where job_runs.outcome = 'running'`;

export interface HistoryOptions {
  /** How long a record may wait to be batched with others. */
  flushDelayMs: number;
  /** Flush at once when this many records are waiting. */
  maxBatch?: number;
  log: Logger;
}

export class HistoryWriter {
  /** Runs in progress, by record id: needed to complete a row already written as `running`. */
  private readonly running = new Map<string, RunRecord>();
  /** Records waiting to be written; a later version of a record replaces an earlier one. */
  private pending = new Map<string, RunRecord>();
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private failures = 0;
  private readonly maxBatch: number;
  private readonly pool: pg.Pool;
  private readonly options: HistoryOptions;

  constructor(pool: pg.Pool, options: HistoryOptions) {
    this.pool = pool;
    this.options = options;
    this.maxBatch = options.maxBatch ?? 1000;
  }

  start(record: RunRecord): void {
    this.running.set(record.id, record);
    this.enqueue(record);
  }

  finish(id: string, outcome: Exclude<Outcome, "running">, error: string | null, result: string | null): void {
    const record = this.running.get(id);
    if (!record) return;
    this.running.delete(id);
    this.enqueue({ ...record, finishedAt: new Date(), outcome, error, result });
  }

  /** Marks every run still in progress as abandoned (a forced shutdown). */
  abandonRunning(reason: string): void {
    for (const id of [...this.running.keys()]) this.finish(id, "abandoned", reason, null);
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Writes everything waiting; resolves when it is in the database. */
  async flush(): Promise<void> {
    while (this.inFlight || this.pending.size > 0) {
      if (this.inFlight) {
        await this.inFlight;
        continue;
      }
      this.writeNow();
      await this.inFlight;
    }
  }

  /** Final flush before the pool ends: retries a few times, then reports what was lost. */
  async close(): Promise<void> {
    if (this.running.size > 0) this.abandonRunning("worker shut down while the job was running");
    for (let attempt = 1; ; attempt++) {
      try {
        await this.flush();
        if (this.pending.size === 0) break;
      } catch {
        // writeNow already logged it
      }
      if (attempt >= 5) {
        this.options.log.error("job history records could not be written before shutdown", { lost: this.pending.size });
        break;
      }
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private enqueue(record: RunRecord): void {
    this.pending.set(record.id, record);
    if (this.inFlight) return; // the in-flight write schedules the next one when it ends
    if (this.pending.size >= this.maxBatch) {
      this.writeNow();
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (!this.inFlight) this.writeNow();
      }, this.options.flushDelayMs);
    }
  }

  private writeNow(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.inFlight = this.write([...batch.values()]).then(
      () => {
        this.failures = 0;
      },
      (err: unknown) => {
        this.failures++;
        // Keep the records; a newer version of one that arrived meanwhile wins.
        for (const [id, record] of batch) if (!this.pending.has(id)) this.pending.set(id, record);
        this.options.log.error("writing job history failed; will retry", { records: batch.size, err });
      },
    ).finally(() => {
      this.inFlight = null;
      if (this.pending.size > 0 && !this.timer) {
        const delay = this.failures > 0 ? Math.min(30_000, 250 * 2 ** this.failures) : this.pending.size >= this.maxBatch ? 0 : this.options.flushDelayMs;
        this.timer = setTimeout(() => {
          this.timer = null;
          if (!this.inFlight) this.writeNow();
        }, delay);
      }
    });
  }

  private async write(records: RunRecord[]): Promise<void> {
    const col = <T>(f: (r: RunRecord) => T) => records.map(f);
    await this.pool.query(UPSERT, [
      col((r) => r.id),
      col((r) => r.jobId),
      col((r) => r.task),
      col((r) => r.queueName),
      col((r) => r.jobKey),
      col((r) => r.attempt),
      col((r) => r.maxAttempts),
      col((r) => r.payload),
      col((r) => r.workerId),
      col((r) => r.runAt?.toISOString() ?? null),
      col((r) => r.startedAt.toISOString()),
      col((r) => r.finishedAt?.toISOString() ?? null),
      col((r) => r.outcome),
      col((r) => r.error),
      col((r) => r.result),
    ]);
  }
}
