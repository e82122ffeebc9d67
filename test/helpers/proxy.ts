// A TCP proxy to Postgres for tests of what the API does when the network misbehaves: it can stop
// forwarding the connections that LISTEN on the job events channel, both ways, leaving them open (a
// network cut as the API sees it: nothing arrives and nothing reports an error), and it can drop
// every connection and refuse new ones (the database unreachable) until it accepts them again, or
// refuse only the connections of one application_name beyond a number open at once (a server with
// no connection slots left, for one of a process's pools).
import net from "node:net";

export interface PgProxy {
  /** The URL with the proxy's host and port in place of the server's. */
  url(databaseUrl: string): string;
  /** How many connections have sent a LISTEN on the job events channel so far. */
  listening(): number;
  cutListeners(): void;
  /** From now on, a connection whose application_name is `name` is closed at once while `max` of them are open. */
  limit(name: string, max: number): void;
  /** Closes every connection and refuses new ones. */
  refuse(): Promise<void>;
  /** Accepts connections again, on the same port. */
  accept(): Promise<void>;
  close(): Promise<void>;
}

export async function startPgProxy(target: URL): Promise<PgProxy> {
  const sockets = new Set<net.Socket>();
  const listeners: { client: net.Socket; upstream: net.Socket }[] = [];
  const limits = new Map<string, { max: number; open: number }>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    let first = true;
    client.on("data", (d: Buffer) => {
      if (first) {
        first = false;
        // The startup message names its parameters and values NUL-terminated.
        for (const [name, limit] of limits) {
          if (!d.includes(`application_name\0${name}\0`)) continue;
          if (limit.open >= limit.max) return void client.destroy();
          limit.open++;
          client.once("close", () => limit.open--);
        }
      }
      if (d.includes('LISTEN "hourglass:job_events"')) listeners.push({ client, upstream });
    });
    client.pipe(upstream);
    upstream.pipe(client);
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on("error", () => b.destroy());
      a.on("close", () => {
        b.destroy();
        sockets.delete(a);
      });
    }
  });
  const listen = (port: number) => new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", () => resolve()));
  const stop = () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    return closed;
  };
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  return {
    url(databaseUrl) {
      const url = new URL(databaseUrl);
      url.host = `127.0.0.1:${port}`;
      return url.toString();
    },
    listening: () => listeners.length,
    cutListeners() {
      for (const { client, upstream } of listeners) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    limit(name, max) {
      limits.set(name, { max, open: 0 });
    },
    refuse: stop,
    accept: () => listen(port),
    close: () => (server.listening ? stop() : Promise.resolve()),
  };
}
