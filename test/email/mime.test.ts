// The one-pass MIME builder (src/email/mime.ts) against nodemailer's own composer: parsed with
// mailparser, both give the same message, for the inputs that exercise the encodings (non-ASCII,
// long lines, lines starting with a dot, bare CR/LF mixes, markup).
import { simpleParser } from "mailparser";
import nodemailer from "nodemailer";
import { describe, expect, it } from "vitest";
import { composeMessage } from "../../src/email/mime.ts";

const cases = {
  ascii: { subject: "Your offer", text: "Hello,\n\nSee you soon.", html: "<p>Hello</p>" },
  nonAscii: { subject: "Angebot für Zoë — 10 € 🎁", text: "Grüße aus Köln\nЖдём вас", html: "<p>Grüße — 🎁</p>" },
  longLines: { subject: "x".repeat(150), text: "word ".repeat(200), html: `<p>${"long ".repeat(300)}</p>` },
  dots: { subject: "dots", text: ".leading dot\n..two dots\n.\nend", html: "<p>.</p>\n.<br>" },
  lineEndings: { subject: "crlf", text: "a\r\nb\nc\r\n\r\nd", html: "<p>a</p>\r\n<p>b</p>\n" },
};

async function viaNodemailer(email: { from: string; to: string; subject: string; text: string; html: string; messageId: string }) {
  const composer = nodemailer.createTransport({ streamTransport: true, buffer: true });
  const info = await composer.sendMail(email);
  return info.message as Buffer;
}

describe("composeMessage", () => {
  it("turns a bare CR into a line break (nodemailer would send it bare, which RFC 5322 forbids)", async () => {
    const ours = composeMessage({ from: "a@example.com", to: "b@example.com", messageId: "<2@x>", subject: "cr", text: "a\rb", html: "<p>a\rb</p>" });
    expect((await simpleParser(ours.raw)).text).toBe("a\nb");
  });

  for (const [name, c] of Object.entries(cases)) {
    it(`matches nodemailer's composition: ${name}`, async () => {
      const email = { from: "Hourglass <hourglass@example.com>", to: "Zoë <zoe@example.com>", messageId: "<1.abc@hourglass>", ...c };
      const ours = composeMessage(email);
      expect(ours.envelope).toEqual({ from: "hourglass@example.com", to: ["zoe@example.com"] });
      const [a, b] = await Promise.all([simpleParser(ours.raw), simpleParser(await viaNodemailer(email))]);
      for (const field of ["subject", "text", "html", "messageId"] as const) expect([field, a[field]]).toEqual([field, b[field]]);
      expect(a.from?.text).toBe(b.from?.text);
      expect(a.to && "text" in a.to ? a.to.text : null).toBe(b.to && "text" in b.to ? b.to.text : null);
      // Lines within the SMTP limit, CRLF only.
      const raw = ours.raw.toString("utf8");
      expect(raw.split("\r\n").every((line) => line.length <= 998 && !line.includes("\n") && !line.includes("\r"))).toBe(true);
    });
  }
});
