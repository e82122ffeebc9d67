// Time-ordered UUIDs (RFC 9562 version 7) minted in the process, so a job_runs row's key is known
// before it is written: the start and the finish of a run can then be merged into one insert.
// Time ordering keeps inserts at the right edge of the primary-key index. Random bits come from a
// pre-filled pool: one uuid per job at thousands of jobs per second makes per-call generation show.
import { randomBytes } from "node:crypto";

const POOL_BYTES = 8192;
let hex = "";
let pos = 0;
let lastMs = -1;
let prefix = "";

export function uuidv7(now = Date.now()): string {
  if (now !== lastMs) {
    const ts = now.toString(16).padStart(12, "0");
    prefix = `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7`;
    lastMs = now;
  }
  if (pos + 19 > hex.length) {
    hex = randomBytes(POOL_BYTES).toString("hex");
    pos = 0;
  }
  const r = hex.slice(pos, pos + 19);
  pos += 19;
  // 12 random bits (rand_a), then the variant (10xx) with 62 random bits (rand_b).
  const variant = "89ab"[parseInt(r[3]!, 16) & 3];
  return `${prefix}${r.slice(0, 3)}-${variant}${r.slice(4, 7)}-${r.slice(7, 19)}`;
}
