// Server-Sent Events read with fetch (EventSource cannot send the Authorization header), and
// the one follower that keeps such a stream going: the dashboard's feed and the detail
// drawer's task stream both run on it.

import { noteAccess } from "./access.js";
import { askForToken, authHeaders, currentToken } from "./token.js";

const BACKOFF_FIRST = 1000;
const BACKOFF_MAX = 30000;
const OPEN_FALLBACK = 2000; // a stream that neither says ": connected" nor sends counts as open then

/** Wait `ms`, or less if `signal` aborts first: a stopped follower does not linger. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Read an SSE body, calling onEvent({event, data}) and onComment(text); resolves at its end. */
async function readEventStream(body, { onEvent, onComment }) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let eventName = "";
  let data = [];
  const line = (text) => {
    if (text === "") {
      if (data.length) onEvent({ event: eventName || "message", data: data.join("\n") });
      eventName = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) {
      onComment(text.slice(1).trim());
      return;
    }
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") eventName = value;
    else if (field === "data") data.push(value);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let match;
      while ((match = /\r\n|\r|\n/.exec(buffer))) {
        // A lone \r at the very end may be the first half of \r\n: wait for more.
        if (match[0] === "\r" && match.index === buffer.length - 1) break;
        line(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** The task in an event's data, or null if it is not one. */
export function parseTask(data) {
  try {
    const task = JSON.parse(data);
    return task && typeof task.id === "string" ? task : null;
  } catch {
    return null;
  }
}

/**
 * Follow the event stream at `path` until `signal` aborts or a hook says stop. Each try sends
 * the current token; a 401 waits for the prompt and tries again at once. After the stream
 * ends or fails it tries again after BACKOFF_FIRST, doubling up to BACKOFF_MAX, and back to
 * BACKOFF_FIRST once a connection opens.
 *
 * Hooks, all optional but onEvent:
 * - onEvent({event, data}): each event.
 * - onState(state, retryAt): "connecting" before each try, "live" once open, "reconnecting"
 *   (with the time of the next try) before each wait; fits setLive.
 * - onOpen(): the stream is open: the service said ": connected" (it listens from then on),
 *   sent an event, or OPEN_FALLBACK passed with neither.
 * - onMissing(): a 404, what `path` names does not exist; following ends. Without this hook
 *   a 404 is one more failure to retry.
 * - onClose(): the stream ended or failed (not stopped); return false to end following
 *   instead of trying again.
 */
export async function follow(path, { signal, onEvent, onState, onOpen, onMissing, onClose }) {
  let backoff = BACKOFF_FIRST;
  while (!signal.aborted) {
    const token = currentToken();
    onState?.("connecting");
    try {
      const response = await fetch(path, {
        headers: { Accept: "text/event-stream", ...authHeaders(token) },
        cache: "no-store",
        signal,
      });
      if (response.status === 401) {
        await askForToken(token);
        continue;
      }
      noteAccess(response);
      if (response.status === 404 && onMissing) {
        onMissing();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      let opened = false;
      const open = () => {
        if (opened || signal.aborted) return;
        opened = true;
        clearTimeout(fallback);
        backoff = BACKOFF_FIRST;
        onState?.("live");
        onOpen?.();
      };
      const fallback = setTimeout(open, OPEN_FALLBACK);
      try {
        await readEventStream(response.body, {
          onComment: (text) => { if (text === "connected") open(); },
          onEvent: (message) => {
            if (signal.aborted) return; // read before the abort: no longer wanted
            open();
            onEvent(message);
          },
        });
      } finally {
        clearTimeout(fallback);
      }
    } catch {
      if (signal.aborted) return;
    }
    if (signal.aborted || onClose?.() === false) return;
    onState?.("reconnecting", Date.now() + backoff);
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
  }
}
