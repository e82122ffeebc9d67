// One HTTP attempt at a webhook delivery: POST the stored body with Standard Webhooks headers to
// the endpoint, through the SSRF guard, within WEBHOOK_TIMEOUT_MS for the whole exchange, reading
// at most 64 KiB of the answer. Redirects are not followed (a 3xx is a failed attempt). The
// outcome goes to app_private.record_webhook_attempt, which decides what happens next.
import http from "node:http";
import https from "node:https";
import { addressPolicy, blockedReason, guardedLookup, literalAddress, type AddressPolicy, type BlockedAddressError } from "./ssrf.ts";
import { signedHeaders } from "./sign.ts";

export const MAX_RESPONSE_BYTES = 64 * 1024;

export interface DeliveryRequest {
  url: string;
  messageId: string;
  body: string;
  secrets: readonly string[];
}

export interface AttemptOutcome {
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  /** From Retry-After (seconds or an HTTP date), when the endpoint sent one. */
  retryAfterSeconds: number | null;
  /** How much of the response body was read (at most MAX_RESPONSE_BYTES). */
  bytesRead: number;
  /** For a name that resolved only to blocked addresses: which, and why (kept out of `error`, which owners read). */
  blockedDetail?: string;
}

export interface Deliverer {
  deliver(request: DeliveryRequest): Promise<AttemptOutcome>;
  close(): void;
}

/** Retry-After in seconds, capped at a day (record_webhook_attempt caps it too; this keeps it an integer). */
export function retryAfterSeconds(value: string | undefined, now = Date.now()): number | null {
  if (!value) return null;
  const DAY = 86_400;
  if (/^\d+$/.test(value.trim())) return Math.min(Number(value.trim()), DAY);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.min(DAY, Math.max(0, Math.ceil((at - now) / 1000)));
}

export function createDeliverer(options: { allowedNetworks: readonly string[]; timeoutMs: number }): Deliverer {
  const policy: AddressPolicy = addressPolicy(options.allowedNetworks);
  const lookup = guardedLookup(policy);
  // Keep-alive: most deliveries go to a few endpoints; a socket is reused only for the address it
  // was checked for.
  const agents = { "http:": new http.Agent({ keepAlive: true, maxSockets: 50 }), "https:": new https.Agent({ keepAlive: true, maxSockets: 50 }) };

  async function deliver(request: DeliveryRequest): Promise<AttemptOutcome> {
    const started = performance.now();
    const done = (o: Partial<AttemptOutcome>): AttemptOutcome => ({
      statusCode: null, error: null, retryAfterSeconds: null, bytesRead: 0, ...o, durationMs: performance.now() - started,
    });
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      return done({ error: "invalid URL" });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return done({ error: `unsupported scheme ${url.protocol}` });
    const literal = literalAddress(url);
    const refused = literal ? blockedReason(literal, policy) : null;
    if (refused) return done({ error: `blocked address: ${refused}` });

    const headers = {
      "content-type": "application/json",
      "user-agent": "Hourglass-Webhooks/1",
      ...signedHeaders(request.secrets, request.messageId, Math.floor(Date.now() / 1000), request.body),
    };
    const signal = AbortSignal.timeout(options.timeoutMs);
    const client = url.protocol === "https:" ? https : http;
    return new Promise<AttemptOutcome>((resolve) => {
      let settled = false;
      const finish = (o: Partial<AttemptOutcome>) => {
        if (settled) return;
        settled = true;
        resolve(done(o));
      };
      const req = client.request(
        url,
        { method: "POST", headers, agent: agents[url.protocol as "http:" | "https:"], lookup: lookup as never, signal },
        (res) => {
          let bytes = 0;
          const statusCode = res.statusCode ?? null;
          const retryAfter = retryAfterSeconds(res.headers["retry-after"]);
          res.on("data", (chunk: Buffer) => {
            bytes += chunk.length;
            if (bytes >= MAX_RESPONSE_BYTES) {
              // Enough: the answer's status is what counts; do not read (or buffer) the rest.
              res.destroy();
              finish({ statusCode, retryAfterSeconds: retryAfter, bytesRead: Math.min(bytes, MAX_RESPONSE_BYTES) });
            }
          });
          res.on("end", () => finish({ statusCode, retryAfterSeconds: retryAfter, bytesRead: bytes }));
          res.on("error", (err) =>
            finish({ statusCode, retryAfterSeconds: retryAfter, bytesRead: Math.min(bytes, MAX_RESPONSE_BYTES), error: signal.aborted ? "timed out reading the response" : err.message }),
          );
          res.on("close", () => finish({ statusCode, retryAfterSeconds: retryAfter, bytesRead: Math.min(bytes, MAX_RESPONSE_BYTES) }));
        },
      );
      req.on("error", (err: NodeJS.ErrnoException) => {
        if (signal.aborted) return finish({ error: `timed out after ${options.timeoutMs} ms` });
        if (err.code === "EBLOCKED") return finish({ error: `blocked address: ${err.message}`, blockedDetail: (err as BlockedAddressError).detail });
        finish({ error: err.message });
      });
      req.end(request.body);
    });
  }

  return {
    deliver,
    close() {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  };
}
