// A small bar chart in inline SVG: finished runs per bucket, the failed part of each bar in the
// failure colour. Each bar has a tooltip; screen readers get the totals and the busiest bucket.
import type { ActivityBucket } from "./queries.ts";

const W = 600;
const H = 90;
const AXIS = 14;

function label(iso: string, unit: "minute" | "hour"): string {
  const d = new Date(iso);
  const hm = d.toISOString().slice(11, 16);
  return unit === "minute" ? hm : `${d.toISOString().slice(5, 10)} ${hm}`;
}

export function BarChart({ title, buckets, unit }: { title: string; buckets: ActivityBucket[]; unit: "minute" | "hour" }) {
  const rows = buckets.map((b) => ({ at: b.bucket, runs: Number(b.runs), failures: Number(b.failures) }));
  const max = Math.max(1, ...rows.map((r) => r.runs));
  const total = rows.reduce((n, r) => n + r.runs, 0);
  const failures = rows.reduce((n, r) => n + r.failures, 0);
  const busiest = rows.reduce((a, r) => (r.runs > (a?.runs ?? -1) ? r : a), rows[0]);
  const summary =
    `${title}: ${total} runs, ${failures} failures` +
    (busiest && busiest.runs > 0 ? `; busiest ${unit} ${label(busiest.at, unit)} UTC with ${busiest.runs} runs.` : ".");
  const step = W / Math.max(1, rows.length);
  const y = (n: number) => ((H - AXIS) * n) / max;
  return (
    <figure class="chart">
      <figcaption>
        {title} <span class="muted">({total} runs, {failures} failed)</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary}>
        <line class="axis" x1="0" x2={W} y1={H - AXIS + 0.5} y2={H - AXIS + 0.5} />
        {rows.map((r, i) => (
          <g key={r.at}>
            <title>{`${label(r.at, unit)} UTC: ${r.runs} runs, ${r.failures} failed`}</title>
            <rect class="hit" x={i * step} y={0} width={step} height={H - AXIS} />
            {r.runs > 0 && <rect class="runs" x={i * step + 1} y={H - AXIS - y(r.runs)} width={Math.max(1, step - 2)} height={y(r.runs)} />}
            {r.failures > 0 && (
              <rect class="failures" x={i * step + 1} y={H - AXIS - y(r.failures)} width={Math.max(1, step - 2)} height={y(r.failures)} />
            )}
          </g>
        ))}
        {total > 0 && (
          <text x="2" y="10" class="tick">
            {max} per {unit}
          </text>
        )}
        {rows.length > 0 && (
          <>
            <text x="0" y={H - 2} class="tick">{label(rows[0]!.at, unit)}</text>
            <text x={W} y={H - 2} class="tick end">{label(rows[rows.length - 1]!.at, unit)} UTC</text>
          </>
        )}
      </svg>
    </figure>
  );
}
