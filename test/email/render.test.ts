import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { compileTemplates, fill, TemplateError, TEMPLATES_DIR } from "../../src/email/render.ts";

describe("email templates", () => {
  it("every template compiles, with a subject and a plain-text alternative", async () => {
    const templates = await compileTemplates();
    expect(templates.size).toBeGreaterThan(0);
    const n = templates.get("notification")!;
    const email = fill(n, { title: "Offer expired", body: "Your offer to ACME expired." });
    expect(email.subject).toBe("Offer expired");
    expect(email.html).toContain("Your offer to ACME expired.");
    expect(email.html).toMatch(/<title>Offer expired<\/title>/);
    expect(email.text).toContain("Your offer to ACME expired.");
    expect(email.html).not.toMatch(/\{\{\w+\}\}/);
  });

  it("escapes values in HTML but not in the plain text, and keeps line breaks out of the subject", async () => {
    const n = (await compileTemplates()).get("notification")!;
    const email = fill(n, { title: "Hi\r\nBcc: victim@example.com", body: `<script>alert("x")</script> & co` });
    expect(email.html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co");
    expect(email.html).not.toContain("<script>alert");
    expect(email.text).toContain(`<script>alert("x")</script> & co`);
    expect(email.subject).toBe("Hi Bcc: victim@example.com");
  });

  it("refuses to render without every variable", async () => {
    const n = (await compileTemplates()).get("notification")!;
    expect(() => fill(n, { title: "x" })).toThrow(TemplateError);
  });

  it("a template that does not compile is an error when templates are loaded", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "hourglass-templates-"));
    try {
      await fs.copyFile(path.join(TEMPLATES_DIR, "layout.mjml"), path.join(dir, "layout.mjml"));
      await fs.writeFile(path.join(dir, "broken.mjml"), "<mj-section><mj-bogus /></mj-section>");
      await fs.writeFile(path.join(dir, "broken.txt"), "Subject: x\n\nx\n");
      await expect(compileTemplates(dir)).rejects.toThrow(/Email template broken does not compile/);
      await fs.rm(path.join(dir, "broken.mjml"));
      await fs.writeFile(path.join(dir, "notext.mjml"), "<mj-section><mj-column><mj-text>x</mj-text></mj-column></mj-section>");
      await expect(compileTemplates(dir)).rejects.toThrow(/notext.txt \(the plain-text alternative\) is missing/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
