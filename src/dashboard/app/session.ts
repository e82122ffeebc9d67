// Where the session token lives in the browser: sessionStorage, so it belongs to this tab and is
// gone when the tab closes. An operator's token can retry, cancel and trigger jobs for 30 days;
// keeping it out of localStorage means it is not left on disk for the next person at a shared
// machine and not shared by every tab. Script on the page can read either storage, which is why
// the page loads no third-party code and its CSP forbids inline script.
const KEY = "hourglass.session";

export function loadToken(): string | null {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null; // storage disabled: the user signs in again on each load
  }
}

export function saveToken(token: string): void {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // Storage disabled: the token still lives in memory for this page.
  }
}

export function clearToken(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}
