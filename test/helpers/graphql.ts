// A GraphQL request to a test API as a signed-in user (or anonymously with token null).
import type { ApiHandle } from "../../src/api/server.ts";

export interface GraphQLResponse<T = any> {
  data?: T;
  errors?: { message: string; extensions?: { code?: string } }[];
}

export async function graphql<T = any>(api: ApiHandle, token: string | null, query: string, variables: Record<string, unknown> = {}): Promise<GraphQLResponse<T>> {
  const res = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await res.json()) as GraphQLResponse<T>;
}
