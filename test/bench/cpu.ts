// Where a request's CPU goes when the clients, the API and PostgreSQL share one machine's cores,
// read from Linux's /proc: the API process, every process named `postgres` (the server's, when
// it runs on this machine), the bench process itself (the clients), and the machine's counters,
// steal included (time a virtual machine was ready to run but its host ran someone else).
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

let ticksPerSecond: number | undefined;
function tickMs(): number {
  ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  return 1000 / ticksPerSecond;
}

/** utime + stime of one process in ms, or null when it is gone. */
function processMs(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: the fields start after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * tickMs();
}

/** CPU ms of every process named `postgres`, by pid. */
function postgresMs(): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let comm: string;
    try {
      comm = readFileSync(`/proc/${entry}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    if (comm !== "postgres") continue;
    const ms = processMs(Number(entry));
    if (ms !== null) out.set(Number(entry), ms);
  }
  return out;
}

/** The machine's busy (not idle, not waiting on I/O) and stolen ms, summed over its cores. */
function machineMs(): { busy: number; steal: number; all: number } {
  const [, ...values] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user).
  const [user, nice, system, idle, iowait, irq, softirq, steal] = values.map((v) => Number(v) * tickMs());
  const busy = user! + nice! + system! + irq! + softirq!;
  return { busy, steal: steal!, all: busy + idle! + iowait! + steal! };
}

interface Snapshot {
  api: number | null;
  postgres: Map<number, number>;
  clients: number;
  machine: { busy: number; steal: number; all: number };
}

function snapshot(apiPid: number): Snapshot {
  const { user, system } = process.cpuUsage();
  return { api: processMs(apiPid), postgres: postgresMs(), clients: (user + system) / 1000, machine: machineMs() };
}

/** CPU spent while some requests ran, summed over several measured stretches. */
export class CpuAccount {
  requests = 0;
  api = 0;
  /** null when no process named postgres ran here (a server on another machine). */
  postgres: number | null = null;
  clients = 0;
  busy = 0;
  steal = 0;
  all = 0;

  /** Runs `fn` (which sends `requests()` requests by the time it resolves) and adds what it cost. */
  async measure<T>(apiPid: number, fn: () => Promise<T>, requests: () => number): Promise<T> {
    const before = snapshot(apiPid);
    const result = await fn();
    const after = snapshot(apiPid);
    this.requests += requests();
    if (before.api === null || after.api === null) throw new Error(`the API process ${apiPid} is gone`);
    this.api += after.api - before.api;
    // A backend that started during the stretch spent all it has there; one that ended is missed.
    let postgres = 0;
    for (const [pid, ms] of after.postgres) postgres += ms - (before.postgres.get(pid) ?? 0);
    if (after.postgres.size > 0) this.postgres = (this.postgres ?? 0) + postgres;
    this.clients += after.clients - before.clients;
    this.busy += after.machine.busy - before.machine.busy;
    this.steal += after.machine.steal - before.machine.steal;
    this.all += after.machine.all - before.machine.all;
    return result;
  }

  /** ms of CPU per request, by where it was spent. */
  perRequest(): { api: number; postgres: number | null; clients: number; total: number | null; other: number; stealPercent: number } {
    const n = this.requests || NaN;
    const postgres = this.postgres === null ? null : this.postgres / n;
    const total = postgres === null ? null : (this.api + this.postgres! + this.clients) / n;
    // Busy time on the machine that none of the three accounts for (other processes, interrupts).
    const other = (this.busy - this.api - (this.postgres ?? 0) - this.clients) / n;
    return { api: this.api / n, postgres, clients: this.clients / n, total, other, stealPercent: (100 * this.steal) / (this.all || NaN) };
  }
}
