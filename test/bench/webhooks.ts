// Webhook benchmarks for `npm run bench` (section 7): deliveries per second through the queue to a
// loopback receiver, and commit-to-delivery latency at a steady 50 events per second.
import http from "node:http";
import type { AddressInfo } from "node:net";
import pg from "pg";
import { loadConfig } from "../../src/config.ts";
import { createPool } from "../../src/db/pool.ts";
import { loadTasks } from "../../src/worker/catalogue.ts";
import { startWorker } from "../../src/worker/runner.ts";
import { lateness, type BenchHelpers, type Lateness } from "./offers.ts";

export interface WebhookFigures {
  rates: number[];
  latency: Lateness;
}

export async function webhookBench(serverUrl: string, h: BenchHelpers, rounds: number): Promise<WebhookFigures> {
  const tasks = await loadTasks();
  const db = await h.benchDatabase(serverUrl, "hg_bench_hooks", tasks);
  const pool = createPool(db.url, { max: 2, name: "bench" }, h.log);
  // The receiver notes when each message arrived (by webhook-id); it answers 204 at once.
  const arrived = new Map<string, number>();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      arrived.set(String(req.headers["webhook-id"]), Date.now());
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  const config = loadConfig({
    NODE_ENV: "production", DATABASE_URL: db.url, AUTHENTICATOR_PASSWORD: "x", LOG_LEVEL: "warn", WEBHOOK_ALLOWED_NETWORKS: "127.0.0.0/8",
  });
  try {
    const { rows: u } = await pool.query<{ id: string }>("insert into app_public.users (email) values ('bench@example.com') returning id::text");
    const owner = u[0]!.id;
    await pool.query("insert into app_public.webhook_endpoints (owner_id, url, topics) values ($1, $2, '{offer.accepted}') returning id", [owner, url]);
    await pool.query(
      "insert into app_private.webhook_secrets (endpoint_id, secret) select id, app_private.new_webhook_secret() from app_public.webhook_endpoints",
    );
    const emit = (n: number, prefix: string) =>
      pool.query(
        `select app_private.emit_events('offer.accepted',
           array(select jsonb_build_object('offerId', g) from generate_series(1, $1) g),
           array(select $2 || g from generate_series(1, $1) g),
           array(select jsonb_build_array($3::bigint) from generate_series(1, $1) g))`,
        [n, prefix, owner],
      );
    const delivered = async () => {
      const { rows } = await pool.query("select count(*)::int as n from app_public.webhook_deliveries where status = 'delivered'");
      return rows[0].n as number;
    };

    // 7a. Throughput: 2,000 deliveries queued, then a worker with the shipped defaults.
    const rates: number[] = [];
    const N = 2000;
    for (let round = 0; round < rounds; round++) {
      const before = await delivered();
      await emit(N, `rate:${round}:`);
      const started = performance.now();
      const worker = await startWorker({ ownerUrl: db.url, config, tasks, log: h.log, crontabFile: null });
      await h.waitFor(async () => (await delivered()) >= before + N);
      rates.push(N / ((performance.now() - started) / 1000));
      await worker.stop();
      console.log(`  round ${round + 1}: ${rates.at(-1)!.toFixed(0)} deliveries/s`);
    }

    // 7b. Latency: one event every 20 ms for 20 s (each its own transaction), worker running.
    const worker = await startWorker({ ownerUrl: db.url, config, tasks, log: h.log, crontabFile: null });
    const committed = new Map<string, number>();
    try {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      const start = Date.now();
      for (let i = 0; i < 1000; i++) {
        const due = start + i * 20;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        await client.query(
          "select app_private.emit_events('offer.accepted', array['{}'::jsonb], array[$1], array[jsonb_build_array($2::bigint)])",
          [`latency:${i}`, owner],
        );
        const at = Date.now(); // the statement's transaction has committed
        const { rows } = await client.query("select id from app_public.outbox_events where idempotency_key = $1", [`latency:${i}`]);
        committed.set(`msg_${rows[0].id}`, at);
      }
      await client.end();
      await h.waitFor(async () => [...committed.keys()].every((id) => arrived.has(id)), 60_000);
    } finally {
      await worker.stop();
    }
    return { rates, latency: lateness([...committed].map(([id, at]) => arrived.get(id)! - at)) };
  } finally {
    server.closeAllConnections();
    server.close();
    await pool.end();
    await h.dropBenchDatabase(serverUrl, db.name, db.roles);
  }
}
