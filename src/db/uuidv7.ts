// Time-ordered UUIDs (RFC 9562 version 7) minted in the process, so a job_runs row's key is known
// before it is written: the start and the finish of a run can then be merged into one insert.
// Time ordering keeps inserts at the right edge of the primary-key index.
import { randomFillSync } from "node:crypto";

const POOL_SIZE = 16 * 512;
let pool = Buffer.alloc(0);
let offset = POOL_SIZE;

export function uuidv7(now = Date.now()): string {
  if (offset >= POOL_SIZE) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_SIZE));
    offset = 0;
  }
  const b = Buffer.from(pool.subarray(offset, offset + 16));
  offset += 16;
  b.writeUIntBE(now, 0, 6);
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
