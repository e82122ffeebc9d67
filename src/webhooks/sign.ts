// Standard Webhooks signatures (https://www.standardwebhooks.com): the receiver checks
// `webhook-signature` = "v1,<base64 HMAC-SHA256 of `${id}.${timestamp}.${body}`>" with the secret
// it was shown. During a secret rotation the header carries one signature per secret in force.
import { createHmac } from "node:crypto";

const SECRET_PREFIX = "whsec_";

export function signature(secret: string, messageId: string, timestamp: number, body: string): string {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error("a webhook secret starts with whsec_");
  const key = Buffer.from(secret.slice(SECRET_PREFIX.length), "base64");
  return "v1," + createHmac("sha256", key).update(`${messageId}.${timestamp}.${body}`).digest("base64");
}

/** The three Standard Webhooks headers for one attempt. */
export function signedHeaders(secrets: readonly string[], messageId: string, timestamp: number, body: string): Record<string, string> {
  if (secrets.length === 0) throw new Error("no signing secret");
  return {
    "webhook-id": messageId,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": secrets.map((s) => signature(s, messageId, timestamp, body)).join(" "),
  };
}
