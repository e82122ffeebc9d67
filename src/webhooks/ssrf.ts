// Where webhook deliveries may connect. An endpoint URL is user input: without a guard, a URL
// naming (or resolving to) 127.0.0.1, 10.x, 169.254.169.254 or fd00:: would make the worker
// probe the operator's own network. The check runs on the address actually connected to (DNS
// is resolved by our lookup at connect time, so a name that resolves differently later is
// checked again), and on IP literals before any connection. Only globally routable unicast
// addresses pass, plus the ranges in WEBHOOK_ALLOWED_NETWORKS (development, tests).
import dns from "node:dns";
import net from "node:net";
import ipaddr from "ipaddr.js";

export class BlockedAddressError extends Error {
  override name = "BlockedAddressError";
  /** What the name resolved to and why each address is refused: for operators, not for the endpoint's owner. */
  detail = "";
}

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

export interface AddressPolicy {
  allowed: readonly Range[];
}

export function addressPolicy(allowedNetworks: readonly string[]): AddressPolicy {
  return { allowed: allowedNetworks.map((c) => ipaddr.parseCIDR(c)) };
}

/** Why an address may not be connected to, or null when it may. */
export function blockedReason(address: string, policy: AddressPolicy): string | null {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return `not an IP address: ${address}`;
  }
  for (const [net, bits] of policy.allowed) {
    if (ip.kind() === net.kind() && ip.match(net, bits)) return null;
    // An IPv4-mapped IPv6 address is allowed only as its IPv4 self.
    if (ip.kind() === "ipv6" && net.kind() === "ipv4" && (ip as ipaddr.IPv6).isIPv4MappedAddress()) {
      if ((ip as ipaddr.IPv6).toIPv4Address().match(net, bits)) return null;
    }
  }
  const range = ip.range();
  return range === "unicast" ? null : `${address} is ${range}`;
}

/** The host of a URL as an IP address, if it is one (WHATWG URL parsing has already turned 2130706433 and 0177.0.0.1 into 127.0.0.1). */
export function literalAddress(url: URL): string | null {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return net.isIP(host) ? host : null;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/** A `lookup` for http.request that resolves a name and refuses every blocked address it resolves to. */
export function guardedLookup(policy: AddressPolicy) {
  return (hostname: string, options: dns.LookupOptions, callback: LookupCallback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const usable = addresses.filter((a) => blockedReason(a.address, policy) === null);
      if (usable.length === 0) {
        // The message reaches the endpoint's owner (the attempt's error): it does not say what the name
        // resolved to, or any signed-in user could map internal DNS through the worker's resolver.
        const blocked = Object.assign(new BlockedAddressError(`${hostname} resolves only to addresses webhooks may not reach`), { code: "EBLOCKED" });
        blocked.detail = addresses.map((a) => blockedReason(a.address, policy)).join("; ");
        return callback(blocked, []);
      }
      if (options.all) return callback(null, usable);
      callback(null, usable[0]!.address, usable[0]!.family);
    });
  };
}
