// <progress> bars for a task's progress, in a row and in the detail drawer.

import { h } from "./dom.js";
import { percent } from "./format.js";

/** A <progress> bar (indeterminate while the task has reported none). */
export function progressBar(label) {
  return h("progress", { max: 100, "aria-label": label });
}

/** Show `progress` (0..100, or null/undefined for none yet) on `bar`. */
export function setProgress(bar, progress) {
  if (progress === null || progress === undefined) {
    bar.removeAttribute("value");
    bar.removeAttribute("aria-valuenow");
    return;
  }
  const value = percent(progress);
  bar.value = value;
  bar.setAttribute("aria-valuenow", String(Math.round(value * 10) / 10));
}
