// What the token may do. With TASKS_READ_TOKEN the service answers everything that reads and
// refuses every write; each answer says which token it was in X-Tasks-Access, so the page
// hides the buttons and the form that would only be refused.

import { $ } from "./dom.js";

const HEADER = "X-Tasks-Access";
let readOnly = false;
const listeners = [];

/** Read the access an answer reports. Without TASKS_API_TOKEN none does: all is allowed. */
export function noteAccess(response) {
  const value = response.headers.get(HEADER);
  if (value !== null) setReadOnly(value === "read-only");
}

/** Forget what the last token could do (it was forgotten or refused). */
export function resetAccess() {
  setReadOnly(false);
}

function setReadOnly(value) {
  if (value === readOnly) return;
  readOnly = value;
  document.documentElement.dataset.access = readOnly ? "read-only" : "read-write";
  $("#access-badge").hidden = !readOnly;
  for (const listener of listeners) listener();
}

/** May this token start, cancel, retry, pause, resume and run? */
export function canWrite() {
  return !readOnly;
}

/** Call `listener` each time the access changes. */
export function onAccessChange(listener) {
  listeners.push(listener);
}
