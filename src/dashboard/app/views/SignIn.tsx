// Passwordless sign-in: ask for a link by email; the link (<APP_URL>/login?token=...) brings the
// user back to the app, which exchanges it for a session (see App.tsx).
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { useMutation } from "@urql/preact";
import { REQUEST_LOGIN_LINK } from "../queries.ts";
import { ErrorNote } from "../ui.tsx";

export function SignIn({ notice }: { notice: ComponentChildren }) {
  const [email, setEmail] = useState("");
  const [sentTo, setSentTo] = useState<string | null>(null);
  const [request, send] = useMutation(REQUEST_LOGIN_LINK);
  return (
    <main class="narrow" id="main">
      <h1>Hourglass operations</h1>
      {notice}
      {sentTo ? (
        <div role="status">
          <h2>Check your email</h2>
          <p>
            If <strong>{sentTo}</strong> has an account, a sign-in link is on its way. It works once, for 15 minutes. You can close this tab.
          </p>
          <button type="button" onClick={() => setSentTo(null)}>
            Use another address
          </button>
        </div>
      ) : (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            const address = email.trim();
            if (!(await send({ email: address })).error) setSentTo(address);
          }}
        >
          <label for="email">Email</label>
          <input id="email" type="email" autoComplete="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          <button type="submit" disabled={request.fetching}>
            Email me a sign-in link
          </button>
          <ErrorNote error={request.error} />
        </form>
      )}
    </main>
  );
}
