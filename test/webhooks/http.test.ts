// One delivery attempt over real loopback HTTP: Standard Webhooks signatures that the
// `standardwebhooks` library verifies, the SSRF guard (no connection at all to a blocked
// address, in any notation), redirects not followed, the timeout and the response-size cap.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Webhook } from "standardwebhooks";
import { createDeliverer, MAX_RESPONSE_BYTES, retryAfterSeconds } from "../../src/webhooks/deliver.ts";
import { signedHeaders } from "../../src/webhooks/sign.ts";

const SECRET = "whsec_" + Buffer.from("a".repeat(32)).toString("base64");
const OLD_SECRET = "whsec_" + Buffer.from("b".repeat(32)).toString("base64");

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  url: string;
}

let server: http.Server;
let port: number;
let connections = 0;
const received: Received[] = [];
let respond: (req: http.IncomingMessage, res: http.ServerResponse) => void = (_req, res) => res.end("ok");

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ headers: req.headers, body, url: req.url ?? "" });
      respond(req, res);
    });
  });
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const request = (url: string, secrets = [SECRET]) => ({ url, messageId: "msg_42", body: '{"type":"offer.sent","data":{"offerId":42}}', secrets });

describe("signatures", () => {
  it("verify with the standardwebhooks library; a tampered id, timestamp or body fails", () => {
    const body = '{"type":"offer.sent"}';
    const ts = Math.floor(Date.now() / 1000);
    const headers = signedHeaders([SECRET], "msg_1", ts, body);
    const wh = new Webhook(SECRET);
    expect(wh.verify(body, headers)).toEqual({ type: "offer.sent" });
    expect(() => wh.verify(body, { ...headers, "webhook-id": "msg_2" })).toThrow();
    expect(() => wh.verify(body, { ...headers, "webhook-timestamp": String(ts - 1) })).toThrow();
    expect(() => wh.verify('{"type":"offer.sent "}', headers)).toThrow();
    expect(() => new Webhook(OLD_SECRET).verify(body, headers)).toThrow();
  });

  it("during a rotation both secrets sign, so a receiver with either verifies", () => {
    const body = "{}";
    const headers = signedHeaders([SECRET, OLD_SECRET], "msg_1", Math.floor(Date.now() / 1000), body);
    expect(headers["webhook-signature"]!.split(" ")).toHaveLength(2);
    expect(new Webhook(SECRET).verify(body, headers)).toEqual({});
    expect(new Webhook(OLD_SECRET).verify(body, headers)).toEqual({});
  });
});

describe("the SSRF guard", () => {
  const guarded = createDeliverer({ allowedNetworks: [], timeoutMs: 2000 });
  afterAll(() => guarded.close());

  it.each([
    ["loopback", "http://127.0.0.1:PORT/"],
    ["loopback as a decimal integer", "http://2130706433:PORT/"],
    ["loopback in octal", "http://0177.0.0.1:PORT/"],
    ["loopback in hex", "http://0x7f.1:PORT/"],
    ["a name that resolves to loopback", "http://localhost:PORT/"],
    ["IPv6 loopback", "http://[::1]:PORT/"],
    ["IPv4-mapped IPv6 loopback", "http://[::ffff:127.0.0.1]:PORT/"],
    ["the unspecified address", "http://0.0.0.0:PORT/"],
    ["link-local (cloud metadata)", "http://169.254.169.254/latest/meta-data/"],
    ["private 10/8", "http://10.0.0.1/"],
    ["private 172.16/12", "http://172.16.5.4/"],
    ["private 192.168/16", "http://192.168.1.1/"],
    ["CGNAT 100.64/10", "http://100.64.0.1/"],
    ["IPv6 unique-local", "http://[fd00::1]/"],
    ["IPv6 link-local", "http://[fe80::1]/"],
  ])("refuses %s without connecting", async (_label, template) => {
    const before = connections;
    const o = await guarded.deliver(request(template.replace("PORT", String(port))));
    expect(o.statusCode).toBeNull();
    expect(o.error).toMatch(/blocked address/);
    expect(connections).toBe(before);
  });

  it("tells the endpoint's owner a name is blocked, not what it resolved to: that goes to the admins' job result", async () => {
    const o = await guarded.deliver(request(`http://localhost:${port}/`));
    expect(o.error).toBe("blocked address: localhost resolves only to addresses webhooks may not reach");
    expect(o.blockedDetail).toMatch(/(127\.0\.0\.1|::1) is loopback/);
  });

  it("delivers to loopback once WEBHOOK_ALLOWED_NETWORKS allows it, with verifiable headers", async () => {
    const allowed = createDeliverer({ allowedNetworks: ["127.0.0.0/8"], timeoutMs: 2000 });
    try {
      const o = await allowed.deliver(request(`http://127.0.0.1:${port}/hook`));
      expect(o).toMatchObject({ statusCode: 200, error: null });
      const got = received.at(-1)!;
      expect(new Webhook(SECRET).verify(got.body, got.headers as Record<string, string>)).toEqual({ type: "offer.sent", data: { offerId: 42 } });
      expect(got.headers["webhook-id"]).toBe("msg_42");
    } finally {
      allowed.close();
    }
  });
});

describe("bounded attempts", () => {
  const d = createDeliverer({ allowedNetworks: ["127.0.0.0/8"], timeoutMs: 500 });
  afterAll(() => d.close());

  it("does not follow a redirect: the 3xx is the outcome", async () => {
    respond = (req, res) => {
      if (req.url === "/moved") res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end();
      else res.end("ok");
    };
    const before = received.length;
    const o = await d.deliver(request(`http://127.0.0.1:${port}/moved`));
    expect(o.statusCode).toBe(302);
    expect(received.slice(before).map((r) => r.url)).toEqual(["/moved"]);
  });

  it("cuts a slow endpoint at the timeout", async () => {
    respond = () => {}; // never answers
    const o = await d.deliver(request(`http://127.0.0.1:${port}/slow`));
    expect(o.statusCode).toBeNull();
    expect(o.error).toMatch(/timed out after 500 ms/);
  });

  it("reads at most 64 KiB of a 10 MB answer and hangs up on the rest", async () => {
    let whole: boolean | undefined;
    let closed!: () => void;
    const serverDone = new Promise<void>((r) => (closed = r));
    respond = (_req, res) => {
      // Whether all 10 MB went out before the connection closed (it must not: the client cut it off).
      res.on("close", () => {
        whole = res.writableFinished;
        closed();
      });
      res.writeHead(200, { "content-type": "application/octet-stream" });
      const chunk = Buffer.alloc(64 * 1024, 120);
      let sent = 0;
      const push = () => {
        while (sent < 10 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", push);
        }
        res.end();
      };
      res.on("error", () => {});
      push();
    };
    const o = await d.deliver(request(`http://127.0.0.1:${port}/big`));
    expect(o.statusCode).toBe(200);
    expect(o.bytesRead).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
    expect(o.bytesRead).toBeGreaterThan(0);
    await serverDone;
    expect(whole).toBe(false);
  });

  it("reads Retry-After as seconds or as an HTTP date", () => {
    expect(retryAfterSeconds("120")).toBe(120);
    expect(retryAfterSeconds("99999999999")).toBe(86_400);
    expect(retryAfterSeconds(new Date("2100-01-01").toUTCString())).toBe(86_400);
    expect(retryAfterSeconds(new Date(Date.now() + 30_000).toUTCString())).toBeGreaterThanOrEqual(29);
    expect(retryAfterSeconds("soon")).toBeNull();
    expect(retryAfterSeconds(undefined)).toBeNull();
  });
});
