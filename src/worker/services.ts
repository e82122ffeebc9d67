// What tasks use besides the database, built once when a worker starts (so a broken email
// template stops the start, not a send) and closed when it stops.
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { createMailer, type Mailer } from "../email/mailer.ts";
import { createDeliverer, type Deliverer } from "../webhooks/deliver.ts";

export interface Services {
  mailer: Mailer;
  webhooks: Deliverer;
}

export async function createServices(config: Config, log: Logger): Promise<Services & { close(): void }> {
  const mailer = await createMailer(config, log.child({ component: "email" }));
  log.info("email ready", { transport: mailer.transport.description, templates: [...mailer.templates.keys()].join(",") });
  const webhooks = createDeliverer(config.webhooks);
  if (config.webhooks.allowedNetworks.length) {
    log.warn("webhook deliveries may reach these private networks", { networks: config.webhooks.allowedNetworks.join(",") });
  }
  return {
    mailer,
    webhooks,
    close: () => {
      mailer.close();
      webhooks.close();
    },
  };
}
