// Time-ordered UUIDs (RFC 9562 version 7) minted in the process, so a job_runs row's key is known
// before it is written: the start and the finish of a run can then be merged into one insert.
// Time ordering keeps inserts at the right edge of the primary-key index.
import { randomUUID } from "node:crypto";

/** 48-bit millisecond timestamp, version 7, then 74 random bits (from a v4 UUID, variant kept). */
export function uuidv7(now = Date.now()): string {
  const ts = now.toString(16).padStart(12, "0");
  const r = randomUUID(); // xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx, N already 8..b
  return `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7${r.slice(15, 18)}-${r.slice(19)}`;
}
