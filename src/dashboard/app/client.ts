// The GraphQL client: urql over HTTP for queries and mutations, graphql-ws over a websocket on the
// same /graphql path for the jobEvents subscription, both with the session's bearer token. One
// client per session, so a new sign-in starts from an empty cache.
import { Client, cacheExchange, fetchExchange, mapExchange, subscriptionExchange, type CombinedError } from "@urql/core";
import { createClient as createWsClient } from "graphql-ws";

export type LiveState = "connecting" | "live" | "reconnecting";

export interface Connection {
  client: Client;
  /** The websocket's state, for the "live" indicator; listeners are told of every change. */
  live: { state: LiveState; listen(fn: (state: LiveState, reconnected: boolean) => void): () => void };
  close(): void;
}

/** Whether the API refused the token (expired, signed out elsewhere). */
function isUnauthenticated(error: CombinedError | undefined): boolean {
  return !!error?.graphQLErrors.some((e) => e.extensions?.code === "UNAUTHENTICATED") || error?.response?.status === 401;
}

export function connect(token: string | null, onUnauthenticated: () => void): Connection {
  const listeners = new Set<(state: LiveState, reconnected: boolean) => void>();
  let everConnected = false;
  const live: Connection["live"] = {
    state: "connecting",
    listen(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
  const set = (state: LiveState, reconnected = false) => {
    live.state = state;
    for (const l of listeners) l(state, reconnected);
  };

  const ws = token
    ? createWsClient({
        url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/graphql`,
        connectionParams: () => ({ authorization: `Bearer ${token}` }),
        lazy: true,
        // A dashboard stays open for hours across API restarts: keep trying (with graphql-ws's
        // randomised exponential back-off), and say so in the header meanwhile.
        retryAttempts: Infinity,
        shouldRetry: () => true,
        on: {
          connected: () => {
            set("live", everConnected);
            everConnected = true;
          },
          closed: () => set(everConnected ? "reconnecting" : "connecting"),
        },
      })
    : null;

  const client = new Client({
    url: "/graphql",
    requestPolicy: "cache-and-network",
    // The API takes GraphQL over POST only.
    preferGetMethod: false,
    fetchOptions: (): RequestInit => (token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    exchanges: [
      mapExchange({
        onError(error) {
          if (isUnauthenticated(error)) onUnauthenticated();
        },
      }),
      cacheExchange,
      fetchExchange,
      ...(ws
        ? [
            subscriptionExchange({
              forwardSubscription: (request) => ({
                subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? "" }, sink) }),
              }),
            }),
          ]
        : []),
    ],
  });
  return { client, live, close: () => void ws?.dispose() };
}
