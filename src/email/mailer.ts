// The email side of a worker process: templates compiled once, one transport, the sender address.
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { compileTemplates, type CompiledTemplate } from "./render.ts";
import { createTransport, type Transport } from "./transport.ts";

export interface Mailer {
  from: string;
  templates: ReadonlyMap<string, CompiledTemplate>;
  transport: Transport;
  close(): void;
}

export async function createMailer(config: Pick<Config, "email" | "dataDir" | "mode">, log: Logger): Promise<Mailer> {
  const templates = await compileTemplates();
  const transport = createTransport(config, log);
  return { from: config.email.from, templates, transport, close: () => transport.close() };
}
