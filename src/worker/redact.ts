// Secrets never reach the job history or the logs: any key that looks like it holds one is
// replaced, at any depth. Payloads should carry ids, not secrets; this is the safety net.
const SECRET_KEY = /pass(word|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|signature|private[-_]?key|credential/i;

export const REDACTED = "[redacted]";

/** Returns the value itself when nothing needs redacting (the common case: no copy is made). */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 20 || value === null || typeof value !== "object") return value;
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
