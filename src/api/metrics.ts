// GET /metrics: Prometheus text format, written by prom-client. The job and delivery figures are
// the cluster's (every API process shows the same; scrape one), read in one query from small
// tables the workers keep up to date (app_hidden.metrics_snapshot): no scan of the history or
// the delivery tables per scrape. The process's own Node.js metrics (prom-client defaults) come
// with them. With METRICS_TOKEN set, a scrape must send it as a bearer token.
import { timingSafeEqual } from "node:crypto";
import type { Request, Response } from "express";
import type pg from "pg";
import { collectDefaultMetrics, Registry } from "prom-client";
import type { Logger } from "../log.ts";
import { queryWithTimeout } from "../db/pool.ts";
import { DURATION_BUCKETS_MS, LATENESS_BUCKETS_MS } from "../metrics/buckets.ts";

interface Snapshot {
  /** task, outcome, runs, duration sum (ms), duration buckets, lateness count, lateness sum (ms), lateness buckets */
  jobs: [string, string, number, number, number[], number, number, number[]][];
  /** name, label, value */
  counters: [string, string, number][];
  /** task, state, jobs */
  queue: [string, string, number][];
  workers_alive: number;
}

type Labels = Record<string, string>;
interface Value {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** A metric whose values are computed from the snapshot at scrape time (prom-client formats it). */
function snapshotMetric(name: string, help: string, type: "counter" | "gauge" | "histogram", values: Value[]) {
  return { name, help, type, aggregator: "sum" as const, get: async () => ({ name, help, type, aggregator: "sum" as const, values }) };
}

/** Prometheus histogram series from cumulative bucket counts (bounds in ms, exposed in seconds). */
function histogram(name: string, labels: Labels, bounds: readonly number[], buckets: readonly number[], count: number, sumMs: number): Value[] {
  return [
    ...bounds.map((b, i) => ({ metricName: `${name}_bucket`, labels: { ...labels, le: String(b / 1000) }, value: Number(buckets[i] ?? 0) })),
    { metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: count },
    { metricName: `${name}_sum`, labels, value: sumMs / 1000 },
    { metricName: `${name}_count`, labels, value: count },
  ];
}

export function renderSnapshot(s: Snapshot, registry: Registry): void {
  const runs: Value[] = [];
  const durations: Value[] = [];
  const lateness = new Map<string, { count: number; sum: number; buckets: number[] }>();
  for (const [task, outcome, n, dSum, dBuckets, lCount, lSum, lBuckets] of s.jobs) {
    runs.push({ labels: { task, outcome }, value: Number(n) });
    durations.push(...histogram("hourglass_job_duration_seconds", { task, outcome }, DURATION_BUCKETS_MS, dBuckets, Number(n), Number(dSum)));
    // Lateness is about when a job started, not how it ended: one histogram per task.
    const l = lateness.get(task) ?? { count: 0, sum: 0, buckets: LATENESS_BUCKETS_MS.map(() => 0) };
    l.count += Number(lCount);
    l.sum += Number(lSum);
    lBuckets.forEach((b, i) => (l.buckets[i]! += Number(b)));
    lateness.set(task, l);
  }
  const late = [...lateness].flatMap(([task, l]) => histogram("hourglass_job_lateness_seconds", { task }, LATENESS_BUCKETS_MS, l.buckets, l.count, l.sum));
  const counter = (name: string, label: string) =>
    s.counters.filter(([n]) => n === name).map(([, value, n]) => ({ labels: { [label]: value }, value: Number(n) }));
  const metrics = [
    snapshotMetric("hourglass_job_runs_total", "Finished job runs by task and outcome (succeeded, failed_retrying, failed_permanently, skipped, timed_out, abandoned).", "counter", runs),
    snapshotMetric("hourglass_job_duration_seconds", "How long job runs took, by task and outcome.", "histogram", durations),
    snapshotMetric("hourglass_job_lateness_seconds", "How late job runs started: start time minus run_at, by task.", "histogram", late),
    snapshotMetric("hourglass_jobs", "Jobs in the queue by task and state (queued, scheduled, running, failed).", "gauge",
      s.queue.map(([task, state, n]) => ({ labels: { task, state }, value: Number(n) }))),
    snapshotMetric("hourglass_workers_alive", "Worker processes with a recent heartbeat.", "gauge", [{ labels: {}, value: Number(s.workers_alive) }]),
    snapshotMetric("hourglass_email_deliveries_total", "Emails that reached a final state: sent, failed, suppressed, interrupted.", "counter", counter("email_deliveries", "outcome")),
    snapshotMetric("hourglass_webhook_deliveries_total", "Webhook deliveries that reached a final status: delivered or failed.", "counter", counter("webhook_deliveries", "status")),
    snapshotMetric("hourglass_webhook_attempts_total", "Webhook delivery attempts by result: 2xx, 3xx, 4xx, 5xx or error (no answer).", "counter", counter("webhook_attempts", "result")),
  ];
  for (const m of metrics) registry.registerMetric(m as never);
}

export function metricsHandler(pool: pg.Pool, o: { token: string | null; timeoutMs: number; log: Logger }) {
  // The process's own metrics (CPU, memory, event loop lag, GC) live as long as the process.
  const processRegistry = new Registry();
  collectDefaultMetrics({ register: processRegistry });
  const expected = o.token ? Buffer.from(`Bearer ${o.token}`) : null;
  return async (req: Request, res: Response) => {
    if (expected) {
      const given = Buffer.from(req.get("authorization") ?? "");
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        res.status(401).set("www-authenticate", "Bearer").json({ errors: [{ message: "A valid metrics token is required." }] });
        return;
      }
    }
    try {
      // Under the API's statement timeout: a scrape stuck behind a lock must not hold a connection.
      const rows = await queryWithTimeout<{ s: Snapshot }>(pool, "select app_hidden.metrics_snapshot() as s", o.timeoutMs);
      // A registry per scrape: concurrent scrapes never see each other's snapshot.
      const registry = new Registry();
      renderSnapshot(rows[0]!.s, registry);
      const merged = Registry.merge([processRegistry, registry]);
      res.set("content-type", merged.contentType).send(await merged.metrics());
    } catch (err) {
      o.log.warn("metrics scrape failed", { err });
      res.status(503).json({ errors: [{ message: "Metrics are unavailable: the database did not answer." }] });
    }
  };
}
