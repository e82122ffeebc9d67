// Where emails go: SMTP through nodemailer when SMTP_URL is set, otherwise one .eml file per
// message under DATA_DIR/mail (so `npm start` works without a mail server). SMTP failures are
// classified: a 5xx answer is permanent (the address is suppressed); 4xx answers, timeouts and
// connection errors are transient (the job is retried with backoff).
import fs from "node:fs/promises";
import path from "node:path";
import nodemailer from "nodemailer";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { composeMessage } from "./mime.ts";

export interface OutgoingEmail {
  from: string;
  to: string;
  subject: string;
  html: string;
  text: string;
  /** Stable per delivery, so that receivers can recognise a duplicate. */
  messageId: string;
}

export interface Transport {
  readonly description: string;
  send(email: OutgoingEmail): Promise<void>;
  close(): void;
}

/** True when the receiving server refused for good (SMTP 5xx). */
export function isPermanentSmtpFailure(err: unknown): boolean {
  const code = (err as { responseCode?: unknown }).responseCode;
  return typeof code === "number" && code >= 500 && code < 600;
}

function smtpTransport(smtpUrl: string, timeoutMs: number): Transport {
  const url = new URL(smtpUrl);
  const secure = url.protocol === "smtps:";
  const transporter = nodemailer.createTransport({
    host: url.hostname,
    port: url.port ? Number(url.port) : secure ? 465 : 587,
    secure,
    auth: url.username ? { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } : undefined,
    pool: true,
    // As many as a worker runs jobs at once by default, so sends do not queue behind each other.
    maxConnections: 10,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  });
  return {
    description: `smtp://${url.host}`,
    async send(email) {
      // Composed in one piece (see mime.ts): it goes out in one write instead of a dozen.
      await transporter.sendMail(composeMessage(email));
    },
    close: () => transporter.close(),
  };
}

function fileTransport(dir: string, log: Logger): Transport {
  const composer = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "unix" });
  return {
    description: `files in ${dir}`,
    async send(email) {
      const info = (await composer.sendMail(email)) as { message: Buffer };
      // Sign-in links are in these files: this OS user's to read, whatever the umask.
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      const safeId = email.messageId.replace(/[^A-Za-z0-9.@-]/g, "_");
      const file = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}-${safeId}.eml`);
      await fs.writeFile(file, info.message, { mode: 0o600 });
      log.info("email written to a file (no SMTP_URL set)", { to: email.to, subject: email.subject, file });
    },
    close: () => composer.close(),
  };
}

export function createTransport(config: Pick<Config, "email" | "dataDir" | "mode">, log: Logger): Transport {
  if (config.email.smtpUrl) return smtpTransport(config.email.smtpUrl, config.email.timeoutMs);
  const dir = path.join(config.dataDir, "mail");
  if (config.mode === "production") {
    log.warn("SMTP_URL is not set: emails, sign-in links included, are written to files instead of sent", { dir });
  }
  return fileTransport(dir, log);
}
