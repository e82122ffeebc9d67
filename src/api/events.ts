// Live job events for admins: `subscription { jobEvents(tasks, keyPrefix) { kind at ... } }` over
// websockets (graphql-ws). Postgres publishes every event with NOTIFY on hourglass:job_events in
// the transaction that causes it (a job enqueued by anything, a run started or ended, crash
// recovery's abandoned marks, a schedule paused or resumed; migration 000022); a payload is a
// JSON array of events. A statement that changes more than 10,000 jobs or runs publishes one
// `overflow` event instead, which every subscription receives. PostGraphile's subscriber holds one LISTEN connection per API process;
// each subscription filters what arrives by task and key prefix and yields events one by one.
//
// Postgres publishes events only while someone watches (they cost the writes a few microseconds
// per job): while this process has live subscriptions it keeps a row in
// app_private.job_event_listeners, refreshed every 20 s and valid for 60 s.
//
// Admins only, decided in SQL: app_hidden.require_admin() runs with the subscriber's own session
// before the first event and again at most every recheckMs while events flow, so a subscription
// ends (ADMIN) soon after its session expires, is logged out or loses admin rights. If the LISTEN
// connection drops, PostGraphile ends every subscription with an error rather than silently
// missing events; clients resubscribe (the dashboard does, with backoff) and re-read state.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type pg from "pg";
import { context, lambda, listen, type GrafastSubscriber } from "postgraphile/grafast";
import type { Logger } from "../log.ts";
import { extendSchema, gql } from "postgraphile/utils";
import { CodedError } from "./trigger.ts";

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
  /** Of overflow: how many jobs or runs the statement changed. */
  count?: number;
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
    return Array.isArray(parsed) ? parsed.filter((e): e is JobEvent => typeof e === "object" && e !== null && typeof e.kind === "string") : [];
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
 * at least one subscription is live. Changes are applied one at a time, in order.
 */
export class JobEventListeners {
  static readonly TTL_MS = 60_000;
  static readonly REFRESH_MS = 20_000;
  readonly #pool: pg.Pool;
  readonly #log: Logger;
  readonly #id = `api:${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  #live = 0;
  #timer: NodeJS.Timeout | null = null;
  #chain: Promise<void> = Promise.resolve();

  constructor(pool: pg.Pool, log: Logger) {
    this.#pool = pool;
    this.#log = log;
  }

  #queue(op: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(op);
    this.#chain = next.catch(() => {});
    return next;
  }

  #touch = () =>
    this.#pool.query("select app_hidden.touch_job_event_listener($1, $2::interval)", [this.#id, `${JobEventListeners.TTL_MS} milliseconds`]).then(() => {});

  /** Starts publishing (if this is the first live subscription); returns its release. */
  async acquire(): Promise<() => Promise<void>> {
    await this.#queue(async () => {
      if (this.#live === 0) {
        await this.#touch();
        this.#timer = setInterval(() => {
          this.#queue(this.#touch).catch((err: unknown) => this.#log.warn("could not refresh the job event listener", { err }));
        }, JobEventListeners.REFRESH_MS);
        this.#timer.unref();
      }
      this.#live++;
    });
    let released = false;
    return () => {
      if (released) return Promise.resolve();
      released = true;
      return this.#queue(async () => {
        if (--this.#live > 0) return;
        await this.#stop();
      }).catch((err: unknown) => this.#log.warn("could not drop the job event listener", { err }));
    };
  }

  async #stop() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#pool.query("select app_hidden.drop_job_event_listener($1)", [this.#id]);
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

/**
 * A subscriber for one subscription: authorises, then reads the shared channel and yields the
 * events that pass the filter (the topic it is given is the filter, as JSON).
 */
export class FilteredJobEvents {
  readonly #source: GrafastSubscriber;
  readonly #authorize: () => Promise<void>;
  readonly #listeners: JobEventListeners;
  readonly #recheckMs: number;

  constructor(source: GrafastSubscriber, authorize: () => Promise<void>, listeners: JobEventListeners, recheckMs = 30_000) {
    this.#source = source;
    this.#authorize = authorize;
    this.#listeners = listeners;
    this.#recheckMs = recheckMs;
  }

  async subscribe(topic: string): Promise<AsyncIterableIterator<JobEvent>> {
    const filter = JSON.parse(topic) as JobEventFilter;
    await this.#authorize();
    const release = await this.#listeners.acquire();
    let inner: AsyncIterator<unknown>;
    try {
      inner = await this.#source.subscribe(JOB_EVENTS_CHANNEL);
    } catch (err) {
      await release();
      throw err;
    }
    const authorize = this.#authorize;
    const recheckMs = this.#recheckMs;
    let checkedAt = Date.now();
    const ready: JobEvent[] = [];
    const finish = async () => {
      await release();
      await inner.return?.(undefined);
    };
    const iterator: AsyncIterableIterator<JobEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      async next(): Promise<IteratorResult<JobEvent>> {
        for (;;) {
          const event = ready.shift();
          if (event) return { done: false, value: event };
          const message = await inner.next();
          if (message.done) return { done: true, value: undefined };
          if (Date.now() - checkedAt >= recheckMs) {
            try {
              await authorize();
            } catch (err) {
              await finish();
              throw err;
            }
            checkedAt = Date.now();
          }
          for (const e of parseEvents(message.value)) if (matchesFilter(e, filter)) ready.push(e);
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

export function JobEventsPlugin(options: { listeners: JobEventListeners; recheckMs?: number }): GraphileConfig.Plugin {
  return extendSchema(() => ({
    typeDefs: gql`
      """
      A job system event, published by Postgres in the transaction that caused it.
      """
      type JobEvent {
        """
        enqueued, started, succeeded, failed, timed_out, skipped (a paused schedule's tick), abandoned
        (its worker died), schedule_paused or schedule_resumed; overflow when one statement changed
        more than 10,000 jobs or runs (one event for all of them, sent whatever the filter: re-read
        what you show).
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
        "Of schedule_paused: the reason given (first 200 characters)."
        reason: String
        "Of overflow: how many jobs or runs the statement changed."
        count: Int
      }

      extend type Subscription {
        """
        Admins: job and schedule events as they happen, optionally only for some tasks and/or job
        keys starting with a prefix (e.g. offers:42: for everything about offer 42). Over
        websockets (graphql-ws) at /graphql, signed in with connectionParams { authorization:
        "Bearer <session token>" }. Ends with an error if the event stream is interrupted:
        resubscribe and re-read what you show.
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
                  const authorize = async () => {
                    await withPgClient(pgSettings ?? null, (client) => client.query({ text: "select app_hidden.require_admin()" }));
                  };
                  // Its subscribe takes the filter (JSON) as the topic.
                  return new FilteredJobEvents(subscriber, authorize, options.listeners, options.recheckMs) as unknown as GrafastSubscriber;
                },
              );
              return listen($events, $topic);
            },
            plan($event) {
              return $event;
            },
          },
        },
      },
    },
  }), "JobEventsPlugin");
}
