// Exact wake-ups: run a scheduled job at its run_at, not at the worker's next poll.
//
// graphile-worker hears about jobs that are due now (LISTEN jobs:insert) but finds a future job
// only by polling, so an offer that expires at 12:00:00.000 would run up to WORKER_POLL_INTERVAL_MS
// late. Every future job Hourglass enqueues records its run_at (rounded up to 10 ms) in
// app_private.job_wakeups and announces new ones on the hourglass:wake channel. This scheduler
// reads the wake-ups of the coming minute (an index range scan), keeps one timer for the next, and
// nudges the worker pool's fetcher when it fires. It re-reads on start, every 20 seconds, and
// shortly after an announcement. Times are kept on the database's clock (the read returns it; the
// estimate from the fastest round trip seen is kept, and timers are set that round trip late), so
// a worker whose clock is off does not wake early, find nothing due, and wait for the next poll.
//
// It listens on graphile-worker's own LISTEN connection (the pool:listen:* events), so it costs
// no connection of its own.
import type { WorkerEvents, WorkerPool } from "graphile-worker";
import type pg from "pg";
import type { Logger } from "../log.ts";

const HORIZON_MS = 60_000;
const REFRESH_MS = 20_000;
const ANNOUNCE_DEBOUNCE_MS = 20;
export const WAKE_CHANNEL = "hourglass:wake";

export class WakeScheduler {
  #pool: pg.Pool;
  #log: Logger;
  #nudgeCount: number;
  #workerPool: WorkerPool | null = null;
  /** Upcoming wake-ups, database epoch ms, ascending; those before #next are done. */
  #wakeups: number[] = [];
  #next = 0;
  /** Database clock minus local clock, ms, from the fastest round trip so far. */
  #offset = 0;
  #bestRtt = Infinity;
  /** Wake-ups at or before this (database ms) have been acted on. */
  #firedUpTo = 0;
  #timer: NodeJS.Timeout | null = null;
  #refreshTimer: NodeJS.Timeout | null = null;
  #soon: NodeJS.Timeout | null = null;
  #refreshing: Promise<void> | null = null;
  #again = false;
  #stopped = false;
  /** How many times the fetcher was nudged (for tests and logs). */
  nudges = 0;

  constructor(pool: pg.Pool, options: { log: Logger; concurrency: number }) {
    this.#pool = pool;
    this.#log = options.log;
    this.#nudgeCount = options.concurrency;
  }

  /** Call before run() (pass the same emitter as its `events` option): the pool is created inside. */
  attach(events: WorkerEvents): void {
    events.on("pool:create", ({ workerPool }) => {
      this.#workerPool = workerPool;
    });
    events.on("pool:listen:success", ({ client }) => {
      client.query(`LISTEN "${WAKE_CHANNEL}"`).catch((err: unknown) => this.#log.warn("could not listen for wake-ups", { err }));
    });
    events.on("pool:listen:notification", ({ message }) => {
      if (message.channel === WAKE_CHANNEL) this.#refreshSoon();
    });
  }

  async start(): Promise<void> {
    // Twice: the first read may include opening a connection, which spoils the clock estimate.
    await this.refresh();
    await this.refresh();
    const tick = () => {
      this.#refreshTimer = setTimeout(() => {
        void this.refresh().finally(() => {
          if (!this.#stopped) tick();
        });
      }, REFRESH_MS);
      this.#refreshTimer.unref();
    };
    tick();
  }

  stop(): void {
    this.#stopped = true;
    for (const t of [this.#timer, this.#refreshTimer, this.#soon]) if (t) clearTimeout(t);
  }

  #refreshSoon(): void {
    if (this.#soon || this.#stopped) return;
    this.#soon = setTimeout(() => {
      this.#soon = null;
      void this.refresh();
    }, ANNOUNCE_DEBOUNCE_MS);
  }

  /** Re-reads the coming wake-ups; one read at a time, a request during a read runs after it. */
  refresh(): Promise<void> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      do {
        this.#again = false;
        try {
          const sent = Date.now();
          const { rows } = await this.#pool.query<{ now_ms: number; wakeups: number[] }>(
            "select now_ms, wakeups from app_private.upcoming_wakeups($1::interval)",
            [`${HORIZON_MS} milliseconds`],
          );
          const received = Date.now();
          const rtt = received - sent;
          if (rtt <= this.#bestRtt) {
            this.#bestRtt = rtt;
            this.#offset = rows[0]!.now_ms - (sent + received) / 2;
          }
          this.#wakeups = rows[0]!.wakeups.filter((w) => w > this.#firedUpTo);
          this.#next = 0;
          this.#arm();
        } catch (err) {
          // Polling still finds every job; only the precision is lost until the next read.
          if (!this.#stopped) this.#log.warn("could not read upcoming wake-ups", { err });
        }
      } while (this.#again && !this.#stopped);
    })().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  #arm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const next = this.#wakeups[this.#next];
    if (next === undefined || this.#stopped) return;
    const delay = Math.max(0, next - this.#offset - Date.now() + Math.max(2, this.#bestRtt));
    this.#timer = setTimeout(() => this.#fire(), delay);
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = null;
    const dbNow = Date.now() + this.#offset;
    let i = this.#next;
    while (i < this.#wakeups.length && this.#wakeups[i]! <= dbNow) i++;
    if (i > this.#next) {
      this.#firedUpTo = this.#wakeups[i - 1]!;
      this.#next = i;
      if (this.#workerPool) {
        this.#workerPool.nudge(this.#nudgeCount);
        this.nudges++;
      }
    }
    this.#arm();
  }
}
