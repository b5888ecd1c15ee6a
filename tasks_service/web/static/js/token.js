// The bearer token (TASKS_API_TOKEN): kept in this tab's sessionStorage, asked for in a modal
// dialog when the service answers 401. Every request that got a 401 waits on the same prompt.

import { resetAccess } from "./access.js";
import { $ } from "./dom.js";
import { setLive } from "./live.js";

const TOKEN_KEY = "tasks.apiToken";

let tokenWaiter = null; // the prompt's promise while it is open
let tokenResolve = null;

export function currentToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage blocked: act as if no token was given
  }
}

export function authHeaders(token = currentToken()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Wait until the user gives a token (the request sent with `refused` got a 401). */
export function askForToken(refused) {
  const now = currentToken();
  if (now && now !== refused) return Promise.resolve(); // someone already entered a new one
  if (now) sessionStorage.removeItem(TOKEN_KEY);
  resetAccess();
  updateTokenButton();
  if (!tokenWaiter) {
    tokenWaiter = new Promise((resolve) => { tokenResolve = resolve; });
    setLive("locked");
    const error = $("#token-error");
    error.hidden = !refused;
    error.textContent = refused ? "That token was refused. Check it and try again." : "";
    const dialog = $("#token-dialog");
    if (!dialog.open) dialog.showModal();
    $("#token-input").value = "";
    $("#token-input").focus();
  }
  return tokenWaiter;
}

/** Wire the prompt and the "Forget token" button, which calls `onForget` once it is gone. */
export function setupTokenDialog({ onForget }) {
  const dialog = $("#token-dialog");
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    updateTokenButton();
    const resolve = tokenResolve;
    tokenWaiter = null;
    tokenResolve = null;
    dialog.close();
    if (resolve) resolve();
  });
  // Nothing works without the token: Escape does not dismiss the prompt (and if the browser
  // closes it anyway, it comes back).
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.addEventListener("close", () => {
    if (tokenWaiter) setTimeout(() => { if (tokenWaiter && !dialog.open) dialog.showModal(); }, 0);
  });
  $("#forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    resetAccess();
    updateTokenButton();
    onForget();
  });
  updateTokenButton();
}

function updateTokenButton() {
  $("#forget-token").hidden = !currentToken();
}
