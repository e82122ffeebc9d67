// Heartbeats and crash recovery. Every worker process upserts a heartbeat (every sixth of
// WORKER_DEAD_AFTER_MS, which the row records as its dead_after: the overview, /healthz and
// /metrics count it alive by that) into app_public.worker_processes, and every third of it asks
// app_private.recover_dead_workers to release the jobs of processes silent for longer (and for
// longer than their own setting, when that is longer). That
// function takes an advisory lock, so one worker at a time does the work, and it never touches a
// process whose heartbeat is fresh. Only a worker that has itself beaten without a gap for longer
// than WORKER_DEAD_AFTER_MS judges the others, so after a database outage (when every heartbeat is
// old) nobody's jobs are released before their owner had a chance to beat again. graphile-worker
// alone would wait four hours.
import os from "node:os";
import type { WorkerEvents } from "graphile-worker";
import type pg from "pg";
import type { Logger } from "../log.ts";

export class Heartbeat {
  #pool: pg.Pool;
  #log: Logger;
  #label: string;
  #tasks: string[] | null;
  #deadAfterMs: number;
  #running: () => number;
  #id: string | null = null;
  #timers: NodeJS.Timeout[] = [];
  #stopped = false;

  constructor(pool: pg.Pool, o: { log: Logger; label: string; tasks: string[] | null; deadAfterMs: number; running: () => number }) {
    this.#pool = pool;
    this.#log = o.log;
    this.#label = o.label;
    this.#tasks = o.tasks;
    this.#deadAfterMs = o.deadAfterMs;
    this.#running = o.running;
  }

  /** Call before run() (the same emitter as its `events` option): the pool id is what locked_by shows. */
  attach(events: WorkerEvents): void {
    events.on("pool:create", ({ workerPool }) => {
      this.#id = workerPool.id;
    });
  }

  get id(): string | null {
    return this.#id;
  }

  async start(): Promise<void> {
    // A failed first beat is logged, not fatal: the next one comes in a few seconds.
    await this.beat().catch((err: unknown) => this.#log.warn("heartbeat failed", { err }));
    if (this.#stopped) return; // stopped during that first beat: no timers
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => void fn().catch((err: unknown) => this.#stopped || this.#log.warn("heartbeat work failed", { err })), ms);
      t.unref();
      this.#timers.push(t);
    };
    every(Math.max(200, Math.floor(this.#deadAfterMs / 6)), () => this.beat());
    every(Math.max(500, Math.floor(this.#deadAfterMs / 3)), () => this.recover());
  }

  async beat(): Promise<void> {
    if (!this.#id || this.#stopped) return;
    await this.#pool.query("select app_private.heartbeat($1, $2, $3, $4, $5, $6, $7::interval, $8::interval)", [
      this.#id, os.hostname(), process.pid, this.#label, this.#tasks, this.#running(), `${Math.floor(this.#deadAfterMs / 2)} milliseconds`,
      `${this.#deadAfterMs} milliseconds`,
    ]);
  }

  /** Releases the jobs of dead workers (if this process wins the lock); returns how many workers. */
  async recover(): Promise<number> {
    if (!this.#id || this.#stopped) return 0;
    const { rows } = await this.#pool.query<{ worker_id: string; label: string; released: number; abandoned: number }>(
      "select * from app_private.recover_dead_workers($1::interval, $2)",
      [`${this.#deadAfterMs} milliseconds`, this.#id],
    );
    for (const r of rows) {
      this.#log.warn("released the jobs of a worker that stopped heartbeating", {
        deadWorker: r.label, pool: r.worker_id, released: r.released, abandoned: r.abandoned,
      });
    }
    // graphile-worker's force_unlock_workers announces nothing, so idle workers would find the
    // released jobs only at their next poll (up to WORKER_POLL_INTERVAL_MS later): tell them now,
    // on the channel graphile-worker itself uses for new jobs (measured: ~1 s sooner at 2 s polls).
    const released = rows.reduce((n, r) => n + Number(r.released), 0);
    if (released > 0) {
      await this.#pool.query("select pg_notify('jobs:insert', $1)", [JSON.stringify({ r: Math.random(), count: released })]);
    }
    return rows.length;
  }

  /**
   * Beats no more and judges nobody, leaving the heartbeat as it is: for a process whose runner
   * died, so that a live worker's recovery releases its jobs once it is silent for long enough.
   * stop() still does the rest later.
   */
  silence(): void {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
  }

  /**
   * Stops beating. After a clean stop (`keepBecause` null: no job of this process still running,
   * and its history all written) the heartbeat is
   * removed, a clean stop not being a death, and any job the pool still holds locked is unlocked
   * (graphile-worker 0.18 can leave its local queue's jobs locked at shutdown); `unstarted` are
   * the ids it meant to hand back, which get back the attempt their fetch counted. Otherwise
   * the heartbeat stays (the reason is logged): it goes silent, and a live worker's recovery
   * releases the jobs and marks the runs still `running` abandoned once it is judged dead.
   */
  async stop(keepBecause: string | null, unstarted: readonly string[] = []): Promise<void> {
    this.silence();
    if (!this.#id) return;
    if (keepBecause !== null) {
      this.#log.warn(`${keepBecause}; leaving the heartbeat for crash recovery to judge`);
      return;
    }
    try {
      const { rows } = await this.#pool.query<{ released: number }>("select app_private.forget_worker($1, $2::bigint[]) as released", [
        this.#id,
        unstarted,
      ]);
      const released = rows[0]?.released ?? 0;
      if (released > 0) this.#log.info("unlocked jobs this worker still held at shutdown", { released });
    } catch (err) {
      this.#log.warn("could not remove the heartbeat", { err });
    }
  }
}
