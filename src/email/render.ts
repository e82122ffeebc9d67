// Email rendering: MJML is compiled once per process (milliseconds per template), to HTML with
// {{placeholders}} that are filled per message with HTML-escaped values (microseconds). Every
// template is <name>.mjml (a body fragment placed in layout.mjml) and <name>.txt (the plain-text
// alternative, whose first line is "Subject: ..."). A template that fails to compile is an error
// when the worker starts, not at send time.
import fs from "node:fs/promises";
import path from "node:path";
import mjml2html from "mjml";

export const TEMPLATES_DIR = path.resolve(import.meta.dirname, "templates");

const PLACEHOLDER = /\{\{(\w+)\}\}/g;

export class TemplateError extends Error {
  override name = "TemplateError";
}

/** A compiled template: literal parts with placeholder names at the odd indices. */
export interface CompiledTemplate {
  name: string;
  subject: string[];
  html: string[];
  text: string[];
  variables: ReadonlySet<string>;
}

export interface RenderedEmail {
  subject: string;
  html: string;
  text: string;
}

const split = (s: string) => s.split(PLACEHOLDER);

export async function compileTemplates(dir = TEMPLATES_DIR): Promise<Map<string, CompiledTemplate>> {
  const layout = await fs.readFile(path.join(dir, "layout.mjml"), "utf8");
  const names = (await fs.readdir(dir)).filter((f) => f.endsWith(".mjml") && f !== "layout.mjml").map((f) => f.slice(0, -5));
  const templates = new Map<string, CompiledTemplate>();
  for (const name of names.sort()) {
    const fragment = await fs.readFile(path.join(dir, `${name}.mjml`), "utf8");
    let textFile: string;
    try {
      textFile = await fs.readFile(path.join(dir, `${name}.txt`), "utf8");
    } catch {
      throw new TemplateError(`Email template ${name}: ${name}.txt (the plain-text alternative) is missing`);
    }
    const subjectLine = /^Subject: (.+)\r?\n\r?\n/.exec(textFile);
    if (!subjectLine) throw new TemplateError(`Email template ${name}: ${name}.txt must start with "Subject: ..." and a blank line`);
    let html: string;
    try {
      const result = await mjml2html(layout.replace("%%BODY%%", fragment), { validationLevel: "strict", minify: false });
      html = result.html;
    } catch (err) {
      throw new TemplateError(`Email template ${name} does not compile: ${(err as Error).message}`, { cause: err });
    }
    const t: CompiledTemplate = {
      name,
      subject: split(subjectLine[1]!),
      html: split(html),
      text: split(textFile.slice(subjectLine[0].length)),
      variables: new Set(),
    };
    for (const parts of [t.subject, t.html, t.text]) for (let i = 1; i < parts.length; i += 2) (t.variables as Set<string>).add(parts[i]!);
    // The layout's own {{subject}} is filled from the subject line.
    (t.variables as Set<string>).delete("subject");
    templates.set(name, t);
  }
  return templates;
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

function join(parts: readonly string[], values: Record<string, string>, escape: boolean): string {
  let out = parts[0]!;
  for (let i = 1; i < parts.length; i += 2) {
    const v = values[parts[i]!]!;
    out += (escape ? escapeHtml(v) : v) + parts[i + 1]!;
  }
  return out;
}

/** Fills a compiled template. Every variable must be given (a missing one is a TemplateError). */
export function fill(template: CompiledTemplate, data: Record<string, unknown>): RenderedEmail {
  const values: Record<string, string> = {};
  for (const name of template.variables) {
    const v = data[name];
    if (v === undefined || v === null) throw new TemplateError(`Email template ${template.name} needs a value for {{${name}}}`);
    values[name] = String(v);
  }
  // Header values: no line breaks (header injection).
  values.subject = join(template.subject, values, false).replace(/[\r\n]+/g, " ").trim();
  return { subject: values.subject, html: join(template.html, values, true), text: join(template.text, values, false) };
}
