// The draw of a gift exchange: who gives to whom. Pure and synchronous so the job that runs a draw
// can call it inside its transaction and the rules can be tested without a database.
//
// A draw must be fair (no participant should be able to guess their giver from how the algorithm
// works), so we sample uniformly among all valid assignments when that is cheap: uniform random
// permutations, rejected until one is valid. Heavy exclusions can make valid permutations too rare
// for that, and an impossible set would make it spin forever, so when a first few samples fail,
// feasibility is decided exactly (a perfect matching on the allowed giver→receiver graph) and a
// randomised matching is the fallback when sampling gives up. The first samples cost O(n) each
// while the exact decision costs O(n²) (seconds from about 20,000 participants, with the worker's
// event loop blocked: no heartbeat, no time limit), so a typical exchange never pays for it.
import { randomInt } from "node:crypto";

export type ParticipantId = string; // ids arrive as strings (bigint from Postgres)

export interface MatchInput {
  participants: readonly ParticipantId[];
  /** Unordered pairs: neither may draw the other. Pairs naming someone not taking part are ignored. */
  exclusions: readonly (readonly [ParticipantId, ParticipantId])[];
}

export type MatchResult =
  | { ok: true; pairs: { giver: ParticipantId; receiver: ParticipantId }[] }
  | { ok: false; reason: string };

/** Enough for any exchange where valid permutations are not vanishingly rare (without exclusions ~1/e are valid). */
const SAMPLING_ATTEMPTS = 20_000;
/** Before the exact check: without exclusions all 64 fail with probability (1 - 1/e)^64, about 2e-13. */
const FIRST_SAMPLES = 64;
/** Ids listed in a reason before the rest are only counted: the organiser needs a lead, not a dump. */
const IDS_IN_REASON = 8;

type Allowed = (giver: number, receiver: number) => boolean;
type RandomIndex = (bound: number) => number;

/**
 * Draws a giver→receiver assignment: everyone gives once and receives once, nobody draws
 * themselves, no excluded pair in either direction. `random` (values in [0, 1)) is for seeded
 * tests; the default is node:crypto so a draw cannot be predicted.
 */
export function assign(input: MatchInput, random?: () => number): MatchResult {
  const ids = input.participants;
  const index = new Map<ParticipantId, number>();
  for (const [i, id] of ids.entries()) {
    if (index.has(id)) throw new Error(`Participant ${id} is listed more than once`);
    index.set(id, i);
  }
  const n = ids.length;
  if (n < 2) return { ok: false, reason: "Fewer than 2 participants" };

  // Sets only for participants with exclusions: memory follows the exclusions, not n².
  const excluded: (Set<number> | undefined)[] = new Array(n);
  const exclude = (a: number, b: number) => (excluded[a] ??= new Set()).add(b);
  for (const [a, b] of input.exclusions) {
    const ia = index.get(a);
    const ib = index.get(b);
    if (ia === undefined || ib === undefined || ia === ib) continue;
    exclude(ia, ib);
    exclude(ib, ia);
  }
  const allowed: Allowed = (g, r) => g !== r && !excluded[g]?.has(r);

  const randomIndex: RandomIndex = random
    ? (bound) => Math.min(bound - 1, Math.floor(random() * bound))
    : (bound) => randomInt(bound);

  const drawn = (receiverOf: Int32Array): MatchResult => ({ ok: true, pairs: ids.map((giver, g) => ({ giver, receiver: ids[receiverOf[g]!]! })) });
  // Any valid permutation the sampler returns is uniform among valid ones, whether or not the
  // exact check ran before it.
  const first = sample(n, allowed, randomIndex, FIRST_SAMPLES);
  if (first) return drawn(first);

  const identity = Int32Array.from({ length: n }, (_, i) => i);
  const exact = maximumMatching(n, allowed, identity, (_g, k) => k);
  if (exact.size < n) return { ok: false, reason: `No assignment satisfies the exclusions: ${explain(ids, allowed, exact.receiverOf)}` };

  return drawn(sample(n, allowed, randomIndex, SAMPLING_ATTEMPTS - FIRST_SAMPLES) ?? randomisedMatching(n, allowed, randomIndex));
}

/**
 * Rejection sampling: uniform over valid assignments because every permutation is equally likely
 * and we keep exactly the valid ones. Fisher–Yates fixes one position per step, so a permutation is
 * abandoned at its first bad position; that only skips work on one already rejected.
 */
function sample(n: number, allowed: Allowed, randomIndex: RandomIndex, attempts: number): Int32Array | null {
  const perm = new Int32Array(n);
  tries: for (let attempt = 0; attempt < attempts; attempt++) {
    for (let i = 0; i < n; i++) perm[i] = i;
    for (let i = n - 1; i >= 0; i--) {
      const j = i === 0 ? 0 : randomIndex(i + 1);
      const pick = perm[j]!;
      perm[j] = perm[i]!;
      perm[i] = pick;
      if (!allowed(i, pick)) continue tries;
    }
    return perm;
  }
  return null;
}

/**
 * Fallback when valid assignments are too rare to sample: a maximum matching visited in random
 * order, then random swaps that keep it valid. NOT exactly uniform (the matching's search order
 * favours some assignments and the swaps cannot reach every valid assignment), but no one can
 * steer it and it never fails when an assignment exists.
 */
function randomisedMatching(n: number, allowed: Allowed, randomIndex: RandomIndex): Int32Array {
  const givers = shuffled(n, randomIndex);
  // One shuffled receiver order, entered at a random point per giver: varied neighbour orders in
  // O(n) memory, where a shuffled list per giver would need n².
  const receivers = shuffled(n, randomIndex);
  const start = Int32Array.from({ length: n }, () => randomIndex(n));
  const { receiverOf } = maximumMatching(n, allowed, givers, (g, k) => receivers[(start[g]! + k) % n]!);
  for (let step = 0; step < 10 * n; step++) {
    const x = randomIndex(n);
    const y = randomIndex(n);
    const rx = receiverOf[x]!;
    const ry = receiverOf[y]!;
    if (x !== y && allowed(x, ry) && allowed(y, rx)) {
      receiverOf[x] = ry;
      receiverOf[y] = rx;
    }
  }
  return receiverOf;
}

function shuffled(n: number, randomIndex: RandomIndex): Int32Array {
  const a = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = randomIndex(i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

const UNSEEN = -1;
const FAR = 0x7fffffff;

/**
 * Hopcroft–Karp over the implicit allowed graph (every receiver is scanned and tested, so nothing
 * of size n² is stored; exclusions are few). `receiverAt(g, k)` is giver g's k-th receiver to try,
 * `giverOrder` the order free givers start their searches in: both only matter to the fallback.
 * The augmenting search is iterative because paths can be as long as the exchange is large.
 */
function maximumMatching(
  n: number,
  allowed: Allowed,
  giverOrder: Int32Array,
  receiverAt: (giver: number, k: number) => number,
): { size: number; receiverOf: Int32Array } {
  const receiverOf = new Int32Array(n).fill(UNSEEN);
  const giverOf = new Int32Array(n).fill(UNSEEN);
  const layer = new Int32Array(n);
  const next = new Int32Array(n); // per giver: how far along its receivers this phase's search is
  const via = new Int32Array(n); // per giver on the search stack: the receiver it descended through
  const queue = new Int32Array(n);
  const stack = new Int32Array(n);
  let size = 0;

  // Layers givers by alternating-path distance from the free givers; false when no free receiver
  // is reachable, i.e. the matching is maximum.
  const layered = (): boolean => {
    let tail = 0;
    for (const g of giverOrder) {
      if (receiverOf[g] === UNSEEN) {
        layer[g] = 0;
        queue[tail++] = g;
      } else layer[g] = FAR;
    }
    let reachedFree = false;
    for (let head = 0; head < tail; head++) {
      const g = queue[head]!;
      for (let k = 0; k < n; k++) {
        const r = receiverAt(g, k);
        if (!allowed(g, r)) continue;
        const owner = giverOf[r]!;
        if (owner === UNSEEN) reachedFree = true;
        else if (layer[owner] === FAR) {
          layer[owner] = layer[g]! + 1;
          queue[tail++] = owner;
        }
      }
    }
    return reachedFree;
  };

  const augment = (root: number): boolean => {
    let depth = 0;
    stack[depth++] = root;
    while (depth > 0) {
      const g = stack[depth - 1]!;
      if (next[g] === n) {
        layer[g] = FAR; // dead end: no other search this phase should enter it
        depth--;
        continue;
      }
      const r = receiverAt(g, next[g]!++);
      if (!allowed(g, r)) continue;
      const owner = giverOf[r]!;
      if (owner === UNSEEN) {
        // Flip the path: each giver on the stack takes the receiver it descended through, the top one takes r.
        let taken = r;
        for (let d = depth - 1; d >= 0; d--) {
          const giver = stack[d]!;
          receiverOf[giver] = taken;
          giverOf[taken] = giver;
          if (d > 0) taken = via[stack[d - 1]!]!;
        }
        return true;
      }
      if (layer[owner] === layer[g]! + 1) {
        via[g] = r;
        stack[depth++] = owner;
      }
    }
    return false;
  };

  while (layered()) {
    next.fill(0);
    for (const g of giverOrder) {
      if (receiverOf[g] === UNSEEN && augment(g)) size++;
    }
  }
  return { size, receiverOf };
}

/**
 * Why no assignment exists, from a maximum matching that is not perfect: the givers reachable by
 * alternating paths from an unmatched giver can, between them, only give to one receiver fewer
 * than there are of them (Hall's condition fails for exactly that set).
 */
function explain(ids: readonly ParticipantId[], allowed: Allowed, receiverOf: Int32Array): string {
  const n = ids.length;
  const unmatched = receiverOf.indexOf(UNSEEN);
  const giverOf = new Int32Array(n).fill(UNSEEN);
  for (let g = 0; g < n; g++) if (receiverOf[g] !== UNSEEN) giverOf[receiverOf[g]!] = g;
  const inGivers = new Uint8Array(n);
  const inReceivers = new Uint8Array(n);
  const queue = [unmatched];
  inGivers[unmatched] = 1;
  for (let head = 0; head < queue.length; head++) {
    const g = queue[head]!;
    for (let r = 0; r < n; r++) {
      if (inReceivers[r] || !allowed(g, r)) continue;
      inReceivers[r] = 1;
      const owner = giverOf[r]!; // matched, or the matching would not be maximum
      if (!inGivers[owner]) {
        inGivers[owner] = 1;
        queue.push(owner);
      }
    }
  }
  const givers = ids.filter((_, i) => inGivers[i]);
  const receivers = ids.filter((_, i) => inReceivers[i]);
  if (receivers.length === 0) return `participant ${givers[0]} is excluded from everyone else`;
  return `${participants(givers)} can only give to ${participants(receivers)} between them`;
}

function participants(list: readonly ParticipantId[]): string {
  const noun = list.length === 1 ? "participant" : "participants";
  if (list.length > IDS_IN_REASON) {
    const shown = list.slice(0, IDS_IN_REASON - 1).join(", ");
    return `${noun} ${shown} and ${list.length - IDS_IN_REASON + 1} others`;
  }
  if (list.length === 1) return `${noun} ${list[0]}`;
  return `${noun} ${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
}
