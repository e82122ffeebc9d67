// Live job events for admins: `subscription { jobEvents(tasks, keyPrefix) { kind at ... } }` over
// websockets (graphql-ws). Postgres publishes every event with NOTIFY on hourglass:job_events in
// the transaction that causes it (migration 000022): a job enqueued through Hourglass's enqueue
// functions (app_private.add_jobs / schedule_jobs), a run started or ended (the history writers, in the statement
// that writes each batch), crash recovery's abandoned marks, a schedule paused or resumed, an
// admin's audited action. A payload is a JSON array of events; a statement that changes more than
// 10,000 jobs or runs publishes one `overflow` event instead, which every subscription receives.
// PostGraphile's subscriber holds one LISTEN connection per API process; each subscription
// filters what arrives by task and key prefix and yields events one by one.
//
// Postgres publishes events only while someone watches (they cost the writes a few microseconds
// per job): while this process has live subscriptions it keeps a row in
// app_private.job_event_listeners, refreshed every 20 s and valid for 60 s.
//
// Admins only, decided in SQL: app_hidden.require_admin() runs with the subscriber's own session
// before the first event and again at most every recheckMs while events flow, so a subscription
// ends (ADMIN) soon after its session expires, is logged out or loses admin rights. If the LISTEN
// connection drops, or the listener row cannot be refreshed before it expires, every subscription
// ends with EVINT rather than silently missing events. A subscription whose client falls more than
// MAX_PENDING_EVENTS behind ends with EVLAG, so that a stalled client cannot make the process hold
// events without end. Either way clients resubscribe (the dashboard does, after 5 s) and re-read state.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type pg from "pg";
import { context, lambda, listen, type GrafastSubscriber } from "postgraphile/grafast";
import type { Logger } from "../log.ts";
import { queryWithTimeout } from "../db/pool.ts";
import { extendSchema, gql } from "postgraphile/utils";
import { requireAdmin } from "./auth.ts";
import { CodedError } from "./trigger.ts";
import { scheduleIdOfJobKey } from "../worker/crontab.ts";

export const JOB_EVENTS_CHANNEL = "hourglass:job_events";

export type JobEventKind =
  | "enqueued"
  | "started"
  | "succeeded"
  | "failed"
  | "timed_out"
  | "skipped"
  | "abandoned"
  | "schedule_paused"
  | "schedule_resumed"
  /** An admin's audited action (retry, cancel, reschedule, trigger, run now, pause, resume). */
  | "admin_action"
  /** A statement changed more than 10,000 jobs or runs: one event instead (re-read state). */
  | "overflow";

/** One event as Postgres publishes it (absent fields were null). */
export interface JobEvent {
  kind: JobEventKind;
  at: string;
  jobId?: string;
  runId?: string;
  taskIdentifier?: string;
  jobKey?: string;
  attempt?: number;
  outcome?: string;
  runAt?: string;
  scheduleId?: string;
  reason?: string;
  /** Of overflow: how many jobs, runs or events. */
  count?: number;
  /** Of admin_action: what an admin did (retry_job, cancel_job, ...) and to what. */
  action?: string;
  target?: string;
}

export interface JobEventFilter {
  /** Only these tasks (null: all). */
  tasks: readonly string[] | null;
  /** Only jobs whose key starts with this (null: all, including jobs without a key). */
  keyPrefix: string | null;
}

export function matchesFilter(event: JobEvent, filter: JobEventFilter): boolean {
  if (event.kind === "overflow") return true;
  if (filter.tasks && !(event.taskIdentifier !== undefined && filter.tasks.includes(event.taskIdentifier))) return false;
  if (filter.keyPrefix !== null && !(event.jobKey?.startsWith(filter.keyPrefix) ?? false)) return false;
  return true;
}

/** A notification's payload as events; anything unreadable is dropped (it did not come from us). */
export function parseEvents(payload: unknown): JobEvent[] {
  if (typeof payload !== "string") return [];
  try {
    const parsed: unknown = JSON.parse(payload);
    if (!Array.isArray(parsed)) return [];
    const events = parsed.filter((e): e is JobEvent => typeof e === "object" && e !== null && typeof e.kind === "string");
    // A crontab entry's jobs carry its id in their key (cron:<id>); Postgres leaves it out of the
    // event to keep notifications small.
    for (const e of events) e.scheduleId ??= scheduleIdOfJobKey(e.jobKey) ?? undefined;
    return events;
  } catch {
    return [];
  }
}

const MAX_FILTER_TASKS = 100;
const MAX_KEY_PREFIX = 512;

export function checkFilter(tasks: unknown, keyPrefix: unknown): JobEventFilter {
  if (Array.isArray(tasks) && tasks.length > MAX_FILTER_TASKS) {
    throw new CodedError("EVFLT", `Filter on at most ${MAX_FILTER_TASKS} tasks.`);
  }
  if (typeof keyPrefix === "string" && (keyPrefix.length === 0 || keyPrefix.length > MAX_KEY_PREFIX)) {
    throw new CodedError("EVFLT", `A key prefix must be 1 to ${MAX_KEY_PREFIX} characters.`);
  }
  return {
    tasks: Array.isArray(tasks) ? tasks.filter((t): t is string => typeof t === "string") : null,
    keyPrefix: typeof keyPrefix === "string" ? keyPrefix : null,
  };
}

/**
 * This process's claim that someone is watching: a row in app_private.job_event_listeners while
 * at least one subscription is live. Changes are applied one at a time, in order, each under its
 * own statement_timeout: a refresh stuck behind a lock (a DBA's) fails in time for the
 * subscriptions to be ended before the row expires, instead of waiting while it does.
 */
export class JobEventListeners {
  static readonly TTL_MS = 60_000;
  static readonly REFRESH_MS = 20_000;
  static readonly TIMEOUT_MS = 5_000;
  readonly #pool: pg.Pool;
  readonly #log: Logger;
  readonly #ttlMs: number;
  readonly #refreshMs: number;
  readonly #timeoutMs: number;
  readonly #id = `api:${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  #live = 0;
  #timer: NodeJS.Timeout | null = null;
  #chain: Promise<void> = Promise.resolve();
  /** When the row was last written: once it may have expired, the live subscriptions are lost. */
  #touchedAt = 0;
  #refreshing = false;
  readonly #onLost = new Set<() => void>();

  constructor(pool: pg.Pool, log: Logger, timing: { ttlMs?: number; refreshMs?: number; timeoutMs?: number } = {}) {
    this.#pool = pool;
    this.#log = log;
    this.#ttlMs = timing.ttlMs ?? JobEventListeners.TTL_MS;
    this.#refreshMs = timing.refreshMs ?? JobEventListeners.REFRESH_MS;
    this.#timeoutMs = timing.timeoutMs ?? JobEventListeners.TIMEOUT_MS;
  }

  #queue(op: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(op);
    this.#chain = next.catch(() => {});
    return next;
  }

  /** One statement in a transaction of its own, under the timeout. */
  async #run(text: string, values: unknown[]): Promise<void> {
    await queryWithTimeout(this.#pool, text, Math.round(this.#timeoutMs), values);
  }

  async #touch() {
    await this.#run("select app_hidden.touch_job_event_listener($1, $2::interval)", [this.#id, `${this.#ttlMs} milliseconds`]);
    this.#touchedAt = Date.now();
  }

  #refresh = () => {
    // A refresh still waiting (for one of the pool's connections, which has no time limit) is
    // judged as a failed one would be: it may come too late.
    if (this.#refreshing) return this.#endIfLost("a refresh of the job event listener is still waiting", null);
    this.#refreshing = true;
    this.#queue(async () => {
      if (this.#live > 0) await this.#touch();
    })
      .catch((err: unknown) => this.#endIfLost("could not refresh the job event listener", err))
      .finally(() => (this.#refreshing = false));
  };

  /**
   * Postgres stops publishing when the row expires: rather than leave subscriptions open and
   * silently missing events, end them (EVINT) if the next refresh, a whole interval and a timeout
   * away, might come too late (clients resubscribe).
   */
  #endIfLost(msg: string, err: unknown) {
    const lost = Date.now() + this.#refreshMs + this.#timeoutMs >= this.#touchedAt + this.#ttlMs;
    this.#log.warn(msg, { ...(err ? { err } : {}), endingSubscriptions: lost ? this.#onLost.size : 0 });
    if (!lost) return;
    const callbacks = [...this.#onLost];
    this.#onLost.clear();
    for (const cb of callbacks) cb();
  }

  /**
   * Starts publishing (if this is the first live subscription); returns its release. onLost is
   * called if publishing may have stopped while the subscription is live.
   */
  async acquire(onLost: () => void): Promise<() => Promise<void>> {
    await this.#queue(async () => {
      if (this.#live === 0) {
        await this.#touch();
        this.#timer = setInterval(this.#refresh, this.#refreshMs);
        this.#timer.unref();
      }
      this.#live++;
    });
    this.#onLost.add(onLost);
    let released = false;
    return () => {
      if (released) return Promise.resolve();
      released = true;
      this.#onLost.delete(onLost);
      return this.#queue(async () => {
        if (this.#live === 0 || --this.#live > 0) return;
        await this.#stop();
      }).catch((err: unknown) => this.#log.warn("could not drop the job event listener", { err }));
    };
  }

  async #stop() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#run("select app_hidden.drop_job_event_listener($1)", [this.#id]);
  }

  /** On shutdown: stop publishing for this process. */
  close(): Promise<void> {
    return this.#queue(async () => {
      if (this.#live === 0) return;
      this.#live = 0;
      await this.#stop();
    }).catch((err: unknown) => this.#log.warn("could not drop the job event listener", { err }));
  }
}


/** One subscription's end of the hub: the notifications' events, in order. */
interface Sink {
  push(events: readonly JobEvent[]): void;
  /** The stream was interrupted: nothing more will come. */
  fail(): void;
}

/**
 * One PostGraphile subscriber iterator per process, fanned out to every subscription. Why not an
 * iterator each: when the LISTEN connection drops, PgSubscriber (@dataplan/pg 1.1) ends its
 * iterators while removing them from the array it is walking, so every other one is skipped and
 * left open, silently missing events. With a single iterator here, every subscription is told.
 *
 * A connection can also die without an error (a network cut, a firewall forgetting it): nothing
 * would arrive, and no one would be told. So while it listens the hub publishes a probe of its own
 * every probeMs (from the pool, on the events channel) and expects it back on the LISTEN
 * connection by the next tick at least half an interval after it was sent; when one does not
 * come back, the connection is taken for dead: it is destroyed (PgSubscriber then replaces it
 * for later subscriptions) and every subscription ends with EVINT.
 */
/**
 * What the hub reads of @dataplan/pg's PgSubscriber beyond GrafastSubscriber: public properties of
 * the 1.x class as pinned, undocumented (the proxy tests fail if an upgrade renames them).
 */
interface PgSubscriberInternals {
  /** The topics its LISTEN is in place for. */
  subscribedTopics?: Set<string>;
  /** The connection it listens on, once it has one. */
  listeningClient?: (pg.PoolClient & { connection?: { stream?: { destroy(err?: Error): void } } }) | null;
  /** Lets its connection go (released to the pool) and listens on a new one when next asked. */
  resetClient?: () => void;
}

class JobEventHub {
  static #hubs = new WeakMap<object, JobEventHub>();
  /** The hub of a subscriber (one per PostGraphile service). */
  static of(source: GrafastSubscriber, probe: ProbeOptions): JobEventHub {
    let hub = JobEventHub.#hubs.get(source);
    if (!hub) JobEventHub.#hubs.set(source, (hub = new JobEventHub(source, probe)));
    return hub;
  }

  readonly #source: GrafastSubscriber;
  readonly #probe: ProbeOptions;
  readonly #probeId = randomBytes(6).toString("hex");
  readonly #sinks = new Set<Sink>();
  #inner: AsyncIterator<unknown> | null = null;
  #starting: Promise<void> | null = null;
  #probeTimer: NodeJS.Timeout | null = null;
  /** The probe sent last and not yet back, if any, and when its NOTIFY committed. */
  #awaiting: { payload: string; sentAt: number | null } | null = null;
  #probes = 0;
  /** When the current listening began: a LISTEN not in place a probe interval later is taken for dead. */
  #listeningSince = 0;
  /** Gives the LISTEN connection back to the pool once no one has subscribed for a while. */
  #idleTimer: NodeJS.Timeout | null = null;

  constructor(source: GrafastSubscriber, probe: ProbeOptions) {
    this.#source = source;
    this.#probe = probe;
  }

  get #subscriber(): PgSubscriberInternals {
    return this.#source as PgSubscriberInternals;
  }

  /** Adds a sink, listening first if no one is; throws if the listening fails. */
  async add(sink: Sink): Promise<void> {
    this.#sinks.add(sink);
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    try {
      while (!this.#inner) await (this.#starting ??= this.#start());
    } catch (err) {
      this.#sinks.delete(sink);
      throw err;
    }
  }

  remove(sink: Sink): void {
    this.#sinks.delete(sink);
    if (this.#sinks.size > 0 || !this.#inner) return;
    const inner = this.#inner;
    this.#stopListening(); // ended on purpose: its pump stops without failing anyone
    void inner.return?.(undefined)?.catch(() => {});
    this.#releaseWhenIdle();
  }

  /**
   * PgSubscriber UNLISTENs when its last subscription ends but keeps its connection out of the pool
   * for good, where nothing would notice it die while idle. Once no one has subscribed for the idle
   * time, the connection is closed (not handed back: PgSubscriber's own error handler stays on it),
   * and the next subscription listens on a new one. A subscription that starts in the instant
   * between the check and the close gets EVINT.
   */
  #releaseWhenIdle(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      if (this.#sinks.size > 0 || this.#inner || this.#starting) return;
      const subscriber = this.#subscriber;
      const client = subscriber.listeningClient;
      if (!client || !subscriber.resetClient) return;
      const release = client.release.bind(client);
      client.release = () => release(true); // true: the pool closes it instead of reusing it
      subscriber.resetClient();
    }, this.#probe.idleReleaseMs);
    this.#idleTimer.unref();
  }

  async #start(): Promise<void> {
    try {
      const inner = (await this.#source.subscribe(JOB_EVENTS_CHANNEL)) as AsyncIterator<unknown>;
      this.#inner = inner;
      this.#awaiting = null;
      this.#listeningSince = Date.now();
      this.#probeTimer = setInterval(this.#sendProbe, this.#probe.everyMs);
      this.#probeTimer.unref();
      void this.#pump(inner);
    } finally {
      this.#starting = null;
    }
  }

  #stopListening(): void {
    this.#inner = null;
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    this.#probeTimer = null;
    this.#awaiting = null;
  }

  /** Ends every subscription (EVINT): nothing more will come from this iterator. */
  #failAll(): void {
    this.#stopListening();
    const sinks = [...this.#sinks];
    this.#sinks.clear();
    for (const sink of sinks) sink.fail();
    this.#releaseWhenIdle();
  }

  #sendProbe = () => {
    const inner = this.#inner;
    if (!inner) return;
    const last = this.#awaiting;
    if (last !== null) {
      // Still being sent (the pool is busy, or the database slow): not the LISTEN connection's fault.
      // Sent less than half an interval ago: give it until the next tick.
      if (last.sentAt === null || Date.now() - last.sentAt < this.#probe.everyMs / 2) return;
      // Judged after this loop turn's I/O, so that a probe already in the socket (the event loop
      // was busy past the interval) is read first.
      setImmediate(() => {
        if (this.#awaiting === last && this.#inner === inner) this.#takeForDead(inner, Date.now() - last.sentAt!);
      });
      return;
    }
    // PgSubscriber's subscribe returns before its LISTEN has run (it may wait for a connection):
    // a probe published before then would never come back. A LISTEN still not in place after a
    // whole interval went into a connection that no longer answers (one cut while it sat idle).
    // (Only once it has a connection: one still waiting for the pool is not the connection's fault.)
    const subscriber = this.#subscriber;
    if (subscriber.subscribedTopics && !subscriber.subscribedTopics.has(JOB_EVENTS_CHANNEL)) {
      const waited = Date.now() - this.#listeningSince;
      // The first tick comes an interval after the start: `>=` half of it, so that it judges then.
      if (subscriber.listeningClient && waited >= this.#probe.everyMs / 2) this.#takeForDead(inner, waited);
      return;
    }
    const probe = { payload: JSON.stringify({ probe: `${this.#probeId}:${++this.#probes}` }), sentAt: null as number | null };
    this.#awaiting = probe;
    this.#probe.send(probe.payload).then(
      () => void (probe.sentAt = Date.now()),
      (err: unknown) => {
        // A probe that cannot be sent (the database is down) is not held against the connection:
        // the LISTEN connection errors by itself then.
        if (this.#awaiting === probe) this.#awaiting = null;
        this.#probe.log.warn("could not send the job events probe", { err });
      },
    );
  };

  /** Its probe (or its LISTEN) did not come back: every subscription ends (EVINT), and the connection goes. */
  #takeForDead(inner: AsyncIterator<unknown>, waitedMs: number): void {
    this.#probe.log.warn("the job events LISTEN connection did not answer; taking it for dead", {
      waitedMs,
      endingSubscriptions: this.#sinks.size,
    });
    this.#failAll();
    void inner.return?.(undefined)?.catch(() => {});
    // PgSubscriber keeps the connection (it has seen no error): destroy it, so that it lets it go
    // and listens on a new one for the next subscription.
    this.#subscriber.listeningClient?.connection?.stream?.destroy(new Error("the job events LISTEN connection stopped delivering notifications"));
  }

  async #pump(inner: AsyncIterator<unknown>): Promise<void> {
    for (;;) {
      let message: IteratorResult<unknown> | null;
      try {
        message = await inner.next();
      } catch {
        message = null;
      }
      if (this.#inner !== inner) return;
      if (message === null || message.done) {
        this.#failAll();
        return;
      }
      if (message.value === this.#awaiting?.payload) {
        this.#awaiting = null;
        continue;
      }
      // Parsed once for every subscription (they only read the events). Probes (an object, not
      // an array: this process's earlier ones, other processes') give none.
      const events = parseEvents(message.value);
      if (events.length === 0) continue;
      for (const sink of [...this.#sinks]) sink.push(events);
    }
  }
}

/** How the hub checks that its LISTEN connection still delivers. */
interface ProbeOptions {
  /** Publishes a notification on the events channel, through a connection of its own. */
  send(payload: string): Promise<void>;
  everyMs: number;
  /** How long the LISTEN connection is kept after the last subscription ends. */
  idleReleaseMs: number;
  log: Logger;
}

/** How often a listening hub publishes its probe (and how long it waits for it). */
export const PROBE_MS = 15_000;

/** How long a hub keeps its LISTEN connection after its last subscription ends (a page reload resubscribes). */
export const IDLE_RELEASE_MS = 10_000;

/**
 * Events a subscription may have waiting for its client before it is ended (EVLAG). One statement
 * publishes at most 10,000 (then one overflow event instead), so a client that keeps up meets it
 * only when several such statements come at once.
 */
export const MAX_PENDING_EVENTS = 20_000;

export interface EventLimits {
  /** How often a subscription's session is checked again while events flow. */
  recheckMs?: number;
  /** MAX_PENDING_EVENTS unless given (tests). */
  maxPending?: number;
  /** PROBE_MS unless given (tests). */
  probeMs?: number;
  /** IDLE_RELEASE_MS unless given (tests). */
  idleReleaseMs?: number;
}

const lagging = (limit: number) =>
  new CodedError("EVLAG", `More than ${limit} events were waiting for this subscription: subscribe again, and re-read what you show (events in between are not replayed).`);

const interrupted = () =>
  new CodedError("EVINT", "The event stream was interrupted: subscribe again, and re-read what you show (events in between are not replayed).");

/**
 * How a subscription ends with an error (EVINT, or ADMIN when its session is gone): yielded as the
 * stream's last value, which the field's plan turns into the error, rather than thrown from the
 * iterator. grafast 1.0 drops an error thrown by a source stream while its consumer is not waiting
 * for a value (graphql-ws still sending the previous event): the client then saw the subscription
 * complete as if nothing had gone wrong.
 */
class StreamEnd {
  readonly error: unknown;
  constructor(error: unknown) {
    this.error = error;
  }
}

/**
 * A subscriber for one subscription: authorises, then takes the process's notifications from the
 * hub and yields the events that pass the filter (the topic it is given is the filter, as JSON).
 */
export class FilteredJobEvents {
  readonly #hub: JobEventHub;
  readonly #authorize: () => Promise<void>;
  readonly #listeners: JobEventListeners;
  readonly #recheckMs: number;
  readonly #maxPending: number;
  readonly #log: Logger;

  constructor(hub: JobEventHub, authorize: () => Promise<void>, listeners: JobEventListeners, log: Logger, limits: EventLimits = {}) {
    this.#hub = hub;
    this.#authorize = authorize;
    this.#listeners = listeners;
    this.#log = log;
    this.#recheckMs = limits.recheckMs ?? 30_000;
    this.#maxPending = limits.maxPending ?? MAX_PENDING_EVENTS;
  }

  async subscribe(topic: string): Promise<AsyncIterableIterator<JobEvent>> {
    const filter = JSON.parse(topic) as JobEventFilter;
    await this.#authorize();
    // Each notification's events that pass the filter, waiting to be read; how many events that
    // is (with those of `ready`); the reader waiting for them.
    const payloads: (readonly JobEvent[])[] = [];
    const ready: JobEvent[] = [];
    let pending = 0;
    const maxPending = this.#maxPending;
    const log = this.#log;
    const hub = this.#hub;
    let state: "open" | "interrupted" | "lagging" | "ended" = "open";
    let wake: (() => void) | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const sink: Sink = {
      push(events) {
        if (state !== "open") return;
        const passed = events.filter((e) => matchesFilter(e, filter));
        if (passed.length === 0) return;
        pending += passed.length;
        if (pending > maxPending) {
          // A client that reads more slowly than events come (or not at all) would otherwise make
          // this process keep everything for it: end its subscription instead (EVLAG).
          log.warn("a jobEvents subscriber fell too far behind; ending its subscription", { pending, limit: maxPending });
          state = "lagging";
          payloads.length = 0;
          ready.length = 0;
          pending = 0;
          // At once, not when its client next reads (it may not): nothing more is kept for it,
          // and Postgres stops publishing if no one else watches.
          hub.remove(sink);
          void release();
        } else {
          payloads.push(passed);
        }
        notify();
      },
      fail() {
        if (state === "open") state = "interrupted";
        notify();
      },
    };
    const release = await this.#listeners.acquire(() => sink.fail());
    try {
      await this.#hub.add(sink);
    } catch (err) {
      await release();
      throw err;
    }
    const authorize = this.#authorize;
    const recheckMs = this.#recheckMs;
    let checkedAt = Date.now();
    let endedWith: StreamEnd | null = null;
    const finish = async () => {
      if (state === "open") state = "ended";
      hub.remove(sink);
      notify();
      await release();
    };
    const iterator: AsyncIterableIterator<JobEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      async next(): Promise<IteratorResult<JobEvent>> {
        for (;;) {
          const event = ready.shift();
          if (event) {
            pending--;
            return { done: false, value: event };
          }
          if (endedWith) return { done: true, value: undefined };
          if (payloads.length === 0) {
            if (state === "interrupted" || state === "lagging") {
              const error = state === "lagging" ? lagging(maxPending) : interrupted();
              await finish();
              endedWith = new StreamEnd(error);
              return { done: false, value: endedWith as unknown as JobEvent };
            }
            if (state === "ended") return { done: true, value: undefined };
            await new Promise<void>((resolve) => (wake = resolve));
            continue;
          }
          const events = payloads.shift()!;
          if (Date.now() - checkedAt >= recheckMs) {
            try {
              await authorize();
            } catch (err) {
              await finish();
              endedWith = new StreamEnd(err);
              return { done: false, value: endedWith as unknown as JobEvent };
            }
            checkedAt = Date.now();
          }
          // Dropped, with the rest, while the session was being checked.
          if (state === "lagging") continue;
          ready.push(...events);
        }
      },
      async return(): Promise<IteratorResult<JobEvent>> {
        await finish();
        return { done: true, value: undefined };
      },
      async throw(err?: unknown): Promise<IteratorResult<JobEvent>> {
        await finish();
        throw err;
      },
    };
    return iterator;
  }
}

export function JobEventsPlugin(options: {
  listeners: JobEventListeners;
  log: Logger;
  /** Publishes on the events channel (the hub's liveness probes). */
  notify: (payload: string) => Promise<void>;
  limits?: EventLimits;
}): GraphileConfig.Plugin {
  const probe: ProbeOptions = {
    send: options.notify,
    everyMs: options.limits?.probeMs ?? PROBE_MS,
    idleReleaseMs: options.limits?.idleReleaseMs ?? IDLE_RELEASE_MS,
    log: options.log,
  };
  return extendSchema(() => ({
    typeDefs: gql`
      """
      A job system event, published by Postgres in the transaction that caused it.
      """
      type JobEvent {
        """
        enqueued, started, succeeded, failed, timed_out, skipped (a paused schedule's tick), abandoned
        (its worker died), schedule_paused, schedule_resumed, admin_action (an admin's audited
        action: retry, cancel, reschedule, ...); overflow when one statement changed more than 10,000
        jobs or runs (one event for all of them, sent whatever the filter: re-read what you show).
        """
        kind: String!
        "When it happened (for a run's end: when it finished)."
        at: Datetime!
        jobId: BigInt
        "The history row (job_runs) of a run event."
        runId: UUID
        taskIdentifier: String
        jobKey: String
        "Of a run event: which attempt."
        attempt: Int
        "Of a run's end: its job_runs outcome (failed_retrying or failed_permanently for failed)."
        outcome: String
        "Of an enqueued job: when it is due."
        runAt: Datetime
        "The crontab entry, for its ticks (job key cron:<id>) and for schedule events."
        scheduleId: String
        "Of schedule_paused and admin_action: the reason given (first 200 characters)."
        reason: String
        "Of admin_action: what was done (retry_job, cancel_job, reschedule_job, trigger_task, run_schedule, pause_schedule, resume_schedule)."
        action: String
        "Of admin_action: to what (a job id, a schedule id, a task)."
        target: String
        "Of overflow: how many jobs, runs or events it stands for."
        count: Int
      }

      extend type Subscription {
        """
        Admins: job and schedule events as they happen, optionally only for some tasks and/or job
        keys starting with a prefix (e.g. offers:42: for everything about offer 42). Over
        websockets (graphql-ws) at /graphql, signed in with connectionParams { authorization:
        "Bearer <session token>" }. Ends with an error if the event stream is interrupted (EVINT)
        or if more events wait for this client than the API keeps for one (EVLAG): resubscribe
        and re-read what you show.
        """
        jobEvents(tasks: [String!], keyPrefix: String): JobEvent!
      }
    `,
    objects: {
      Subscription: {
        plans: {
          jobEvents: {
            subscribePlan(_$root, fieldArgs) {
              const $topic = lambda([fieldArgs.getRaw("tasks"), fieldArgs.getRaw("keyPrefix")], ([tasks, keyPrefix]) =>
                JSON.stringify(checkFilter(tasks, keyPrefix)),
              );
              const $events = lambda(
                [context().get("pgSubscriber"), context().get("withPgClient"), context().get("pgSettings")],
                ([subscriber, withPgClient, pgSettings]) => {
                  if (!subscriber) throw new Error("This server has no event subscriber (pgSubscriber)");
                  const authorize = () => requireAdmin(withPgClient, pgSettings);
                  // Its subscribe takes the filter (JSON) as the topic.
                  return new FilteredJobEvents(JobEventHub.of(subscriber, probe), authorize, options.listeners, options.log, options.limits) as unknown as GrafastSubscriber;
                },
              );
              return listen($events, $topic);
            },
            plan($event) {
              // The stream's last value when it ends with an error (see StreamEnd).
              return lambda($event, (event: unknown) => {
                if (event instanceof StreamEnd) throw event.error;
                return event;
              });
            },
          },
        },
      },
    },
  }), "JobEventsPlugin");
}
