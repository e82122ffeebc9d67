// README's GraphQL examples are what clients copy: each one must be valid against the schema the
// API serves (schema.graphql, which test/api/api.test.ts keeps equal to it).
import fs from "node:fs/promises";
import path from "node:path";
import { buildSchema, Kind, parse, validate, type DocumentNode } from "graphql";
import { describe, expect, it } from "vitest";
import { SCHEMA_FILE } from "../../src/api/schema.ts";

const README = path.resolve(import.meta.dirname, "../../README.md");

/** Each operation of each ```graphql block, as a document of its own, with its README line. */
function readmeOperations(markdown: string): { line: number; source: string; document: DocumentNode }[] {
  const out: { line: number; source: string; document: DocumentNode }[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== "```graphql") continue;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end]!.trim() !== "```") end++;
    const block = lines.slice(start, end).join("\n");
    const document = parse(block);
    for (const definition of document.definitions) {
      const loc = definition.loc!;
      out.push({
        line: start + loc.startToken.line,
        source: block.slice(loc.start, loc.end),
        document: { kind: Kind.DOCUMENT, definitions: [definition] },
      });
    }
    i = end;
  }
  return out;
}

describe("README", () => {
  it("every GraphQL example is valid against schema.graphql", async () => {
    const schema = buildSchema(await fs.readFile(SCHEMA_FILE, "utf8"));
    const operations = readmeOperations(await fs.readFile(README, "utf8"));
    // The examples cover accounts, offers, exchanges, webhooks, uploads and the control plane.
    expect(operations.length).toBeGreaterThan(50);
    const invalid = operations
      .map((o) => ({ ...o, errors: validate(schema, o.document).map((e) => e.message) }))
      .filter((o) => o.errors.length > 0)
      .map((o) => `README.md:${o.line}: ${o.source.split("\n")[0]!.slice(0, 80)} → ${o.errors.join("; ")}`);
    expect(invalid).toEqual([]);
  });

  it("finds the invalid field in an example (the check above can fail)", () => {
    const schema = buildSchema("type Query { a: Int }");
    const [ok, bad] = readmeOperations("x\n```graphql\n{ a }\n{ b }\n```\n");
    expect(validate(schema, ok!.document)).toEqual([]);
    expect(validate(schema, bad!.document).map((e) => e.message)).toEqual(['Cannot query field "b" on type "Query". Did you mean "a"?']);
    expect(bad!.line).toBe(4);
  });
});
