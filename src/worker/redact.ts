// What the job history stores of payloads and results: secrets never reach it, and every value
// can be written as jsonb. Any key that looks like it holds a secret is replaced, at any depth
// (payloads should carry ids, not secrets; this is the safety net). Strings lose NUL characters
// (jsonb rejects them), BigInts become strings, and nesting deeper than 20 levels (or a cycle)
// is cut off.
const SECRET_KEY = /pass(word|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|signature|private[-_]?key|credential/i;

export const REDACTED = "[redacted]";
export const TOO_DEEP = "[too deep]";

/** Returns the value itself when nothing needs changing (the common case: no copy is made). */
export function redact(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return value.includes("\u0000") ? value.replaceAll("\u0000", "") : value;
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return value;
  if (depth >= 20) return TOO_DEEP;
  if (Array.isArray(value)) {
    let out: unknown[] | null = null;
    value.forEach((v, i) => {
      const r = redact(v, depth + 1);
      if (r !== v) (out ??= [...value])[i] = r;
    });
    return out ?? value;
  }
  let out: Record<string, unknown> | null = null;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const v = (value as Record<string, unknown>)[key];
    const r = SECRET_KEY.test(key) ? REDACTED : redact(v, depth + 1);
    if (r !== v) (out ??= { ...(value as Record<string, unknown>) })[key] = r;
  }
  return out ?? value;
}

/** Error text for the history and logs, without characters jsonb or text columns reject. */
export function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.includes("\u0000") ? text.replaceAll("\u0000", "") : text;
}
