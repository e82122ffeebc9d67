// A real SMTP server on loopback that records what it receives and can be told, per recipient and
// attempt, to answer with an SMTP error code (421 try later, 550 no such user).
import { SMTPServer } from "smtp-server";
import { simpleParser } from "mailparser";
import type { AddressInfo } from "node:net";

export interface ReceivedEmail {
  to: string;
  messageId: string;
  subject: string;
  /** Decoded plain-text and HTML parts. */
  text: string;
  html: string;
  raw: string;
}

export interface SmtpSink {
  url: string;
  received: ReceivedEmail[];
  /** Answer for a recipient's nth RCPT (1-based): an SMTP code to refuse with, or null to accept. */
  policy: (recipient: string, attempt: number) => number | null;
  close(): Promise<void>;
}


/**
 * `parse: false` only counts messages (for benchmarks: parsing would compete with the sender).
 * `holdMs` delays the final "250 OK" after a message is recorded: the message has arrived, but
 * the sender does not know yet (for tests that kill the sender in that window).
 */
export async function startSmtpSink(options: { parse?: boolean; holdMs?: number } = {}): Promise<SmtpSink & { count: number }> {
  const attempts = new Map<string, number>();
  const sink: SmtpSink & { count: number } = {
    count: 0,
    url: "",
    received: [],
    policy: () => null,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onRcptTo(address, _session, callback) {
      const n = (attempts.get(address.address) ?? 0) + 1;
      attempts.set(address.address, n);
      const code = sink.policy(address.address, n);
      if (code) {
        return callback(Object.assign(new Error(code >= 500 ? "No such user here" : "Try again later"), { responseCode: code }));
      }
      callback();
    },
    onData(stream, session, reply) {
      const callback = (err?: Error) => (options.holdMs ? setTimeout(() => reply(err), options.holdMs) : reply(err));
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        sink.count += session.envelope.rcptTo.length;
        if (options.parse === false) return callback();
        const raw = Buffer.concat(chunks);
        simpleParser(raw).then(
          (parsed) => {
            for (const rcpt of session.envelope.rcptTo) {
              sink.received.push({
                to: rcpt.address,
                messageId: parsed.messageId ?? "",
                subject: parsed.subject ?? "",
                text: parsed.text ?? "",
                html: typeof parsed.html === "string" ? parsed.html : "",
                raw: raw.toString("utf8"),
              });
            }
            callback();
          },
          (err: Error) => callback(err),
        );
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  sink.url = `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  return sink;
}
