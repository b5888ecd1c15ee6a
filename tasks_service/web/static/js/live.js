// The "Live" badge in the top bar: how the dashboard's own event stream is doing.

import { $ } from "./dom.js";

const LABELS = {
  connecting: "Connecting…",
  live: "Live",
  locked: "Waiting for token",
};

let ticker = null;

/** Show `state`; while "reconnecting", count down the seconds to `retryAt`. */
export function setLive(state, retryAt) {
  const node = $("#live");
  node.dataset.state = state;
  clearInterval(ticker);
  if (state === "reconnecting") {
    const show = () => {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      node.textContent = seconds ? `Reconnecting in ${seconds} s` : "Reconnecting…";
    };
    show();
    ticker = setInterval(show, 500);
  } else {
    node.textContent = LABELS[state] ?? state;
  }
}
