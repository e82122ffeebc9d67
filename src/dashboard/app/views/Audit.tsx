// Who paused, resumed, ran, triggered, retried, rescheduled or cancelled what, when and why.
import { useQuery } from "@urql/preact";
import { AUDIT, type AdminActionRow } from "../queries.ts";
import { useLiveRefresh } from "../live.ts";
import { exact } from "../format.ts";
import { Columns, ErrorNote, Time } from "../ui.tsx";

const PAGE = 200;

function details(d: Record<string, unknown>): string {
  return Object.entries(d)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
}

export function Audit() {
  const [result, reexecute] = useQuery({ query: AUDIT, variables: { first: PAGE } });
  // Only actions (admin_action events, which every view takes) add rows here.
  useLiveRefresh(() => reexecute({ requestPolicy: "network-only" }), () => false);
  const rows = (result.data?.allAdminActions?.nodes ?? []).filter((a): a is AdminActionRow => !!a);
  const total = result.data?.allAdminActions?.totalCount ?? 0;
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit</h1>
      <ErrorNote error={result.error} what="Audit" />
      {!result.data ? (
        result.fetching && <p role="status">Loading…</p>
      ) : rows.length === 0 ? (
        <p class="muted">No admin action yet.</p>
      ) : (
        <table>
          <caption>{total > rows.length ? `The latest ${rows.length} of ${total} actions` : `${total} action${total === 1 ? "" : "s"}`}</caption>
          <Columns names={["When", "Who", "Action", "Target", "Why", "Details"]} />
          <tbody>
            {rows.map((a) => (
              <tr key={a.rowId}>
                <td class="nowrap">
                  {exact(a.createdAt)}
                  <div class="muted">
                    <Time value={a.createdAt} />
                  </div>
                </td>
                <td>{a.userByActorId?.email ?? <span class="muted">deleted user</span>}</td>
                <td>{a.action.replace(/_/g, " ")}</td>
                <td class="key">{a.target}</td>
                <td>{a.reason ?? <span class="muted">no reason given</span>}</td>
                <td class="details">{details(a.details)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
