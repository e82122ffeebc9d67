import { describe, expect, it } from "vitest";
import { assign, type MatchInput, type MatchResult, type ParticipantId } from "../../src/exchanges/match.ts";

// Seeded so the statistical checks give the same answer on every run.
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ids = (n: number, first = 101): ParticipantId[] => Array.from({ length: n }, (_, i) => String(first + i));

function isValid(input: MatchInput, receiverOf: ReadonlyMap<ParticipantId, ParticipantId>): boolean {
  const excluded = new Set(input.exclusions.flatMap(([a, b]) => [`${a}>${b}`, `${b}>${a}`]));
  const received = new Set(receiverOf.values());
  return (
    receiverOf.size === input.participants.length &&
    received.size === input.participants.length &&
    input.participants.every((g) => {
      const r = receiverOf.get(g);
      return r !== undefined && r !== g && input.participants.includes(r) && !excluded.has(`${g}>${r}`);
    })
  );
}

/** Asserts every rule and returns the assignment as "giver>receiver,…" in participant order. */
function expectValid(input: MatchInput, result: MatchResult): string {
  if (!result.ok) throw new Error(`expected an assignment, got: ${result.reason}`);
  const givers = result.pairs.map((p) => p.giver);
  const receivers = result.pairs.map((p) => p.receiver);
  expect([...givers].sort()).toEqual([...input.participants].sort());
  expect([...receivers].sort()).toEqual([...input.participants].sort());
  const excluded = new Set(input.exclusions.flatMap(([a, b]) => [`${a}>${b}`, `${b}>${a}`]));
  for (const { giver, receiver } of result.pairs) {
    expect(receiver).not.toBe(giver);
    expect(excluded.has(`${giver}>${receiver}`)).toBe(false);
  }
  const receiverOf = new Map(result.pairs.map((p) => [p.giver, p.receiver]));
  return input.participants.map((g) => `${g}>${receiverOf.get(g)}`).join(",");
}

function* permutations<T>(items: readonly T[]): Generator<T[]> {
  if (items.length <= 1) {
    yield [...items];
    return;
  }
  for (const [i, first] of items.entries()) {
    for (const rest of permutations([...items.slice(0, i), ...items.slice(i + 1)])) yield [first, ...rest];
  }
}

/** Every valid assignment, found the slow way, as "giver>receiver,…" strings. */
function bruteForce(input: MatchInput): string[] {
  const found: string[] = [];
  for (const perm of permutations(input.participants)) {
    const receiverOf = new Map(input.participants.map((g, i) => [g, perm[i]!]));
    if (isValid(input, receiverOf)) found.push(input.participants.map((g) => `${g}>${receiverOf.get(g)}`).join(","));
  }
  return found;
}

describe("gift exchange draw", () => {
  it("1,000 random runs over a 10-person exchange with exclusions never violate a rule", () => {
    const people = ids(10);
    const [a, b, c, d, e, f, g, h, i] = people as [string, string, string, string, string, string, string, string, string];
    const input: MatchInput = {
      participants: people,
      exclusions: [[a, b], [c, d], [e, f], [g, h], [a, i]],
    };
    for (let run = 0; run < 1000; run++) expectValid(input, assign(input));
  });

  it("picks each of the 2 derangements of 3 people about equally often", () => {
    const input: MatchInput = { participants: ["1", "2", "3"], exclusions: [] };
    const random = mulberry32(20241224);
    const counts = new Map<string, number>();
    for (let run = 0; run < 2000; run++) {
      const key = expectValid(input, assign(input, random));
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual(bruteForce(input).sort());
    for (const count of counts.values()) {
      expect(count / 2000).toBeGreaterThan(0.35);
      expect(count / 2000).toBeLessThan(0.65);
    }
  });

  it("reaches every valid assignment of 5 people with exclusions, each about equally often", () => {
    const input: MatchInput = { participants: ["1", "2", "3", "4", "5"], exclusions: [["1", "2"], ["3", "4"]] };
    const valid = bruteForce(input);
    const runs = 200 * valid.length;
    const random = mulberry32(7);
    const counts = new Map<string, number>();
    for (let run = 0; run < runs; run++) {
      const key = expectValid(input, assign(input, random));
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual(valid.sort());
    for (const count of counts.values()) {
      expect(count).toBeGreaterThan(200 * 0.6);
      expect(count).toBeLessThan(200 * 1.4);
    }
  });

  describe("impossible sets fail cleanly with a reason", () => {
    it.each([
      ["no participants", { participants: [], exclusions: [] }, /Fewer than 2 participants/],
      ["1 participant", { participants: ["7"], exclusions: [] }, /Fewer than 2 participants/],
      [
        "2 participants who exclude each other",
        { participants: ["7", "8"], exclusions: [["8", "7"]] },
        /No assignment satisfies the exclusions: participant 7 is excluded from everyone else/,
      ],
      [
        "a participant excluded from everyone else",
        { participants: ["1", "2", "3", "4"], exclusions: [["1", "2"], ["3", "1"], ["1", "4"]] },
        /No assignment satisfies the exclusions: participant 1 is excluded from everyone else/,
      ],
    ] satisfies [string, MatchInput, RegExp][])("%s", (_name, input, reason) => {
      const result = assign(input, mulberry32(1));
      expect(result).toEqual({ ok: false, reason: expect.stringMatching(reason) });
      if (input.participants.length >= 2) expect(bruteForce(input)).toEqual([]);
    });

    it.each([
      [
        // 1, 2 and 3 exclude each other, so all three must give to 4 or 5.
        "three people who exclude each other among five",
        { participants: ["1", "2", "3", "4", "5"], exclusions: [["1", "2"], ["2", "3"], ["1", "3"]] },
        "participants 1, 2 and 3 can only give to participants 4 and 5 between them",
      ],
      [
        // 1, 2 and 4 may each give only to 3; any two of them already show it.
        "three people who may only give to the same one",
        { participants: ["1", "2", "3", "4"], exclusions: [["1", "2"], ["1", "4"], ["2", "4"]] },
        "participants 1 and 2 can only give to participant 3 between them",
      ],
    ] satisfies [string, MatchInput, string][])("a set with too few receivers between them: %s", (_name, input, reason) => {
      const allowed = (g: string, r: string) =>
        g !== r && !input.exclusions.some(([a, b]) => (a === g && b === r) || (a === r && b === g));
      for (const g of input.participants) expect(input.participants.some((r) => allowed(g, r))).toBe(true);
      expect(bruteForce(input)).toEqual([]);
      expect(assign(input, mulberry32(1))).toEqual({ ok: false, reason: `No assignment satisfies the exclusions: ${reason}` });
    });
  });

  it("ignores exclusions naming unknown participants", () => {
    const input: MatchInput = { participants: ["1", "2"], exclusions: [["1", "99"], ["98", "2"], ["97", "96"]] };
    expect(assign(input)).toEqual({
      ok: true,
      pairs: [
        { giver: "1", receiver: "2" },
        { giver: "2", receiver: "1" },
      ],
    });
  });

  it("throws on duplicate participants", () => {
    expect(() => assign({ participants: ["1", "2", "1"], exclusions: [] })).toThrow(/Participant 1 is listed more than once/);
  });

  it("finds a valid assignment for 200 participants with random exclusions of ~10% density", () => {
    const random = mulberry32(42);
    const people = ids(200, 1000);
    const exclusions: [string, string][] = [];
    for (let i = 0; i < people.length; i++) {
      for (let j = i + 1; j < people.length; j++) if (random() < 0.1) exclusions.push([people[i]!, people[j]!]);
    }
    const input: MatchInput = { participants: people, exclusions };
    expectValid(input, assign(input, random));
    expectValid(input, assign(input));
  });

  it("draws for 100,000 participants with a few exclusions (sampled: no exact check of a 10^10-pair graph first)", () => {
    const random = mulberry32(9);
    const people = ids(100_000);
    const exclusions: [string, string][] = Array.from({ length: 50 }, (_, i) => [people[2 * i]!, people[2 * i + 1]!]);
    const input: MatchInput = { participants: people, exclusions };
    const result = assign(input, random);
    if (!result.ok) throw new Error(result.reason);
    // The rules, checked in O(n) (expectValid's sorting and matchers are slow at this size).
    const receivers = new Set(result.pairs.map((p) => p.receiver));
    expect(result.pairs.map((p) => p.giver)).toEqual(people);
    expect(receivers.size).toBe(people.length);
    expect(result.pairs.filter((p) => p.giver === p.receiver)).toEqual([]);
    const excluded = new Set(exclusions.flatMap(([a, b]) => [`${a}>${b}`, `${b}>${a}`]));
    expect(result.pairs.filter((p) => excluded.has(`${p.giver}>${p.receiver}`))).toEqual([]);
  });

  it("still finds an assignment when valid ones are too rare to sample (neighbours on a ring only)", () => {
    const people = ids(20);
    const exclusions: [string, string][] = [];
    for (let i = 0; i < 20; i++) {
      for (let j = i + 2; j < 20; j++) if (!(i === 0 && j === 19)) exclusions.push([people[i]!, people[j]!]);
    }
    const input: MatchInput = { participants: people, exclusions };
    const random = mulberry32(3);
    for (let run = 0; run < 5; run++) expectValid(input, assign(input, random));
  });
});
