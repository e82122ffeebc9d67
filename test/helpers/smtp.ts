// A real SMTP server on loopback that records what it receives and can be told, per recipient and
// attempt, to answer with an SMTP error code (421 try later, 550 no such user).
import { SMTPServer } from "smtp-server";
import type { AddressInfo } from "node:net";

export interface ReceivedEmail {
  to: string;
  messageId: string;
  subject: string;
  raw: string;
}

export interface SmtpSink {
  url: string;
  received: ReceivedEmail[];
  /** Answer for a recipient's nth RCPT (1-based): an SMTP code to refuse with, or null to accept. */
  policy: (recipient: string, attempt: number) => number | null;
  close(): Promise<void>;
}

function header(raw: string, name: string): string {
  const m = new RegExp(`^${name}:\\s*(.*)$`, "im").exec(raw);
  return m ? m[1]!.trim() : "";
}

export async function startSmtpSink(): Promise<SmtpSink> {
  const attempts = new Map<string, number>();
  const sink: SmtpSink = {
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
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        for (const rcpt of session.envelope.rcptTo) {
          sink.received.push({ to: rcpt.address, messageId: header(raw, "Message-ID"), subject: header(raw, "Subject"), raw });
        }
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  sink.url = `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  return sink;
}
