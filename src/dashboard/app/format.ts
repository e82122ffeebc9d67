// How times, durations and counts read on the page: relative times with the exact UTC time on
// hover, durations in the largest sensible unit.

export function relative(iso: string, now: number): string {
  const ms = new Date(iso).getTime() - now;
  const abs = Math.abs(ms);
  const ago = ms < 0;
  let text: string;
  if (abs < 1500) return "now";
  if (abs < 90_000) text = `${Math.round(abs / 1000)} s`;
  else if (abs < 90 * 60_000) text = `${Math.round(abs / 60_000)} min`;
  else if (abs < 36 * 3_600_000) text = `${Math.round(abs / 3_600_000)} h`;
  else return new Date(iso).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  return ago ? `${text} ago` : `in ${text}`;
}

export function exact(iso: string): string {
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const min = Math.floor(ms / 60_000);
  return `${min} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function seconds(s: number | null | undefined): string {
  return s === null || s === undefined ? "—" : duration(s * 1000);
}

/** A datetime-local input's value (the browser's local time) for an ISO time, to the minute. */
export function toLocalInput(date: Date): string {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}
