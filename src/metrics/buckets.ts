// Histogram bounds for job durations and lateness, in milliseconds. The database keeps cumulative
// counts per bound (app_private.job_metrics, fifteen each); changing these needs a migration that
// resets those histograms.
export const DURATION_BUCKETS_MS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000] as const;
export const LATENESS_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000] as const;
