// Offer notifications: what the worker or the company's members are told when an offer is sent,
// renewed, expires, is accepted or declined. The offers triggers enqueue one
// offers__queue_notifications job per event and 1000 offers (cheap for bulk statements), which
// enqueues one offers__notify job per recipient; that job re-reads the offer and hands the text
// to app_private.notify,
// which honours the recipient's preferences (in-app row, email through the email log) and is
// idempotent by key, so a retried job tells no one twice.
import type { JobHelpers } from "graphile-worker";
import { z } from "zod";
import { skipped, type Skipped } from "../worker/task.ts";

export const OFFER_EVENTS = ["sent", "renewed", "expired", "accepted", "rejected"] as const;
export type OfferEvent = (typeof OFFER_EVENTS)[number];

export const offerNotifyPayload = z.object({
  offerId: z.number().int().positive(),
  event: z.enum(OFFER_EVENTS),
  userId: z.number().int().positive(),
  /** The transaction that made the change: makes the notification's key unique per change. */
  change: z.string().min(1).max(64),
});
export type OfferNotifyPayload = z.output<typeof offerNotifyPayload>;

export interface OfferFacts {
  status: string;
  company: string;
  job_title: string;
  worker: string;
  start_date: string;
  end_date: string;
  expires_at: Date | null;
  rejection_reason: string | null;
  rejection_reason_description: string | null;
}

const REJECTION_REASONS: Record<string, string> = {
  RATE_TOO_LOW: "the rate is too low",
  DATES_UNAVAILABLE: "the dates do not work",
  ACCEPTED_ANOTHER_OFFER: "they accepted another offer",
  LOCATION: "the location does not suit",
  OTHER: "another reason",
};

function utc(d: Date | null): string {
  return d ? `${d.toISOString().slice(0, 16).replace("T", " ")} UTC` : "(no date)";
}

/** The title and body for one event; plain text (the email templates escape it). */
export function offerMessage(event: OfferEvent, o: OfferFacts): { title: string; body: string } {
  const dates = `from ${o.start_date} to ${o.end_date}`;
  switch (event) {
    case "sent":
      return {
        title: `New offer from ${o.company}: ${o.job_title}`,
        body: `${o.company} offers you "${o.job_title}" ${dates}. Please answer by ${utc(o.expires_at)}.`,
      };
    case "renewed":
      return {
        title: `Offer updated: ${o.job_title}`,
        body: `${o.company} changed its offer for "${o.job_title}" (${dates}). Please answer by ${utc(o.expires_at)}.`,
      };
    case "expired":
      return {
        title: `Offer expired: ${o.job_title}`,
        body: `The offer from ${o.company} for "${o.job_title}" expired without an answer.`,
      };
    case "accepted":
      return {
        title: `${o.worker} accepted the offer for ${o.job_title}`,
        body: `${o.worker} accepted "${o.job_title}" ${dates}; the placement has been created.`,
      };
    case "rejected": {
      const why = REJECTION_REASONS[o.rejection_reason ?? ""] ?? "no reason given";
      const words = o.rejection_reason_description ? ` They wrote: "${o.rejection_reason_description}"` : "";
      return {
        title: `${o.worker} declined the offer for ${o.job_title}`,
        body: `${o.worker} declined "${o.job_title}" ${dates}: ${why}.${words}`,
      };
    }
  }
}

export async function notifyOffer(query: JobHelpers["query"], p: OfferNotifyPayload): Promise<{ notified: boolean } | Skipped> {
  const { rows } = await query<OfferFacts>(
    `select o.status, c.name as company, j.title as job_title, w.name as worker,
            o.start_date::text, o.end_date::text, o.expires_at, o.rejection_reason, o.rejection_reason_description
     from app_public.offers o
     join app_public.companies c on c.id = o.company_id
     join app_public.workers w on w.id = o.worker_id
     join app_public.job_applications a on a.id = o.application_id
     join app_public.jobs j on j.id = a.job_id
     where o.id = $1`,
    [p.offerId],
  );
  const offer = rows[0];
  if (!offer) return skipped(`offer ${p.offerId} no longer exists`);
  // "Please answer by ..." is wrong once the offer is no longer open; the later event tells.
  if ((p.event === "sent" || p.event === "renewed") && offer.status !== "SENT") {
    return skipped(`offer ${p.offerId} is ${offer.status} now`);
  }
  const { title, body } = offerMessage(p.event, offer);
  const { rows: done } = await query<{ notified: boolean }>("select app_private.notify($1, $2, $3, $4, $5, $6) as notified", [
    p.userId,
    `offer.${p.event}`,
    title,
    body,
    JSON.stringify({ offerId: p.offerId }),
    `offer:${p.offerId}:${p.event}:${p.userId}:${p.change}`,
  ]);
  return { notified: done[0]!.notified };
}

export const offerFanOutPayload = z.object({
  event: z.enum(OFFER_EVENTS),
  ids: z.array(z.number().int().positive()).min(1).max(1000),
  change: z.string().min(1).max(64),
});
export type OfferFanOutPayload = z.output<typeof offerFanOutPayload>;

/** One offers__notify job per recipient of the event, for each offer (one transaction). */
export async function queueOfferNotifications(query: JobHelpers["query"], p: OfferFanOutPayload): Promise<{ queued: number }> {
  const { rows } = await query<{ queued: number }>("select app_private.queue_offer_notifications($1, $2::bigint[], $3) as queued", [
    p.event,
    p.ids,
    p.change,
  ]);
  return { queued: rows[0]!.queued };
}
