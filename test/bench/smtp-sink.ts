// A counting SMTP server in its own process, for the email benchmark: a real mail server is not
// in the sender's process, and one in the same event loop would slow the sender down.
// Prints its URL on stdout, then answers "count" lines on stdin with the number received.
import { createInterface } from "node:readline";
import { startSmtpSink } from "../helpers/smtp.ts";

const sink = await startSmtpSink({ parse: false });
process.stdout.write(`${sink.url}\n`);
createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "count") process.stdout.write(`${sink.count}\n`);
  if (line.trim() === "close") void sink.close().then(() => process.exit(0));
});
