// One row of the task table, built once per task and then updated in place as the task's
// changes arrive.

import { h, setText, timeNode } from "./dom.js";
import { between, formatPercent, oneLine, paramsSummary, parseTime, shortId, shortTime } from "./format.js";
import { progressBar, setProgress } from "./progress.js";
import { actionButtons, actionsKey } from "./task-actions.js";

/** A row for `task`: a click or Enter on it calls onOpen(id), its buttons' answers go to onAnswer. */
export function buildRow(task, { onOpen, onAnswer }) {
  const tr = h("tr", { tabIndex: 0, dataset: { taskId: task.id } });
  const cells = {
    id: h("td", { className: "col-id" }, h("code", { title: task.id, text: shortId(task.id) })),
    name: h("td", { className: "col-name" }),
    status: h("td", { className: "col-status" }),
    progress: h("td", { className: "col-progress" }),
    created: h("td", { className: "col-created" }, timeNode(task.created_at, shortTime(task.created_at))),
    attempts: h("td", { className: "col-attempts" }),
    actions: h("td", { className: "col-actions" }),
  };
  cells.name.append(
    h("span", { className: "task-name", text: task.name }),
    h("span", { className: "params-summary", text: paramsSummary(task.params) }),
  );
  tr.append(...Object.values(cells));
  tr.addEventListener("click", (event) => {
    if (event.target.closest("button, a, input")) return;
    onOpen(task.id);
  });
  tr.addEventListener("keydown", (event) => {
    if (event.target === tr && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      onOpen(task.id);
    }
  });
  const row = { task, tr, cells, actionsKey: null, onAnswer };
  updateRow(row, task);
  return row;
}

function statusBadge(status) {
  return h("span", { className: "badge", dataset: { status }, text: status });
}

/** Under the status: why a pending task waits, or that a cancel was asked for. */
// Why a pending task that is due has not started (its `waiting_for`).
const WAITING_NOTES = {
  paused: "type paused",
  concurrency: "at its concurrency limit",
  rate_limit: "at its rate limit",
};

function statusNote(task) {
  if (task.status === "running" && task.cancel_requested) return "cancelling…";
  if (task.status === "pending") {
    const runAt = parseTime(task.run_at);
    if (task.error && task.attempts > 0 && runAt - Date.now() > 0) return `retry at ${shortTime(task.run_at)}`;
    if (runAt && runAt - Date.now() > 1000) return `at ${shortTime(task.run_at)}`;
    if (WAITING_NOTES[task.waiting_for]) return WAITING_NOTES[task.waiting_for];
  }
  return "";
}

/** Show `task` in its row, touching only what changed (live updates come often). */
export function updateRow(row, task) {
  const { tr, cells } = row;
  row.task = task;
  tr.dataset.status = task.status;

  const badge = cells.status.querySelector(".badge");
  if (!badge) cells.status.append(statusBadge(task.status), h("span", { className: "status-note" }));
  else {
    badge.dataset.status = task.status;
    setText(badge, task.status);
  }
  setText(cells.status.querySelector(".status-note"), statusNote(task));

  // Progress: a bar while running; the outcome once finished.
  const shape = task.status === "running" ? "bar" : `text-${task.status}`;
  if (cells.progress.dataset.shape !== shape) {
    cells.progress.dataset.shape = shape;
    cells.progress.replaceChildren();
    if (shape === "bar") {
      cells.progress.append(
        h("div", { className: "progress-line" },
          progressBar(`Progress of ${task.name} ${shortId(task.id)}`),
          h("span", { className: "progress-text" })),
        h("span", { className: "progress-message" }),
      );
    } else {
      cells.progress.append(h("span", { className: "outcome" }));
    }
  }
  if (shape === "bar") {
    setProgress(cells.progress.querySelector("progress"), task.progress);
    setText(cells.progress.querySelector(".progress-text"), formatPercent(task.progress));
    setText(cells.progress.querySelector(".progress-message"), task.message ? oneLine(task.message, 60) : "");
  } else {
    const outcome = cells.progress.querySelector(".outcome");
    const text = outcomeText(task);
    setText(outcome, oneLine(text, 70));
    outcome.title = text.length > 70 ? text : "";
    outcome.dataset.kind = task.error ? "error" : "result";
  }

  setText(cells.attempts, `${task.attempts} / ${task.max_attempts}`);
  cells.attempts.title = `${task.attempts} attempt${task.attempts === 1 ? "" : "s"} of at most ${task.max_attempts}`;

  const key = actionsKey(task);
  if (row.actionsKey !== key) {
    row.actionsKey = key;
    cells.actions.replaceChildren(...actionButtons(task, row.onAnswer));
  }
}

/** Where a task not running stands: its error, its result, how it stopped, or that it waits. */
function outcomeText(task) {
  if (task.status === "failed" || (task.status === "pending" && task.error)) return task.error ?? "";
  if (task.status === "completed" && task.result !== null && task.result !== undefined) {
    return `→ ${typeof task.result === "string" ? task.result : JSON.stringify(task.result)}`;
  }
  if (task.status === "cancelled") {
    if (task.progress !== null && task.progress !== undefined) return `stopped at ${formatPercent(task.progress)}`;
    if (task.started_at && task.finished_at) return `stopped after ${between(task.started_at, task.finished_at)}`;
    if (!task.started_at) return "never started";
  } else if (task.status === "pending" && !task.error) {
    const runAt = parseTime(task.run_at);
    if (!runAt || runAt - Date.now() <= 1000) return "queued";
  }
  return "";
}
