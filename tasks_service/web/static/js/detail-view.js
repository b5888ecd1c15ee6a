// The detail drawer's content: one task's progress, error, result, params, facts and
// children, all set as text.

import { $, h, setText } from "./dom.js";
import { between, formatPercent, fullTime, json } from "./format.js";
import { progressBar, setProgress } from "./progress.js";
import { actionButtons, actionsKey } from "./task-actions.js";

/** What the drawer shows for a task the service does not know (any more). */
export function renderMissing(id) {
  setText($("#detail-title"), "No such task");
  setText($("#detail-id"), id);
  $("#detail-body").replaceChildren(h("p", { className: "empty", text: "It may have been purged." }));
}

function section(title, ...content) {
  return h("section", { className: "detail-section" }, h("h3", { text: title }), ...content);
}

/** Fill the drawer's body with empty slots for one task; its buttons' answers go to onAnswer,
 * and a click on a child (or the parent) opens it with onOpen. */
export function buildDetail({ onAnswer, onOpen }) {
  const slot = (tag, props = {}) => h(tag, props);
  const slots = {
    progressSection: null,
    bar: progressBar("Progress"),
    percent: slot("span", { className: "progress-text", id: "detail-percent" }),
    message: slot("p", { className: "progress-message", id: "detail-message" }),
    facts: slot("dl", { className: "facts", id: "detail-facts" }),
    params: slot("pre", { className: "code", id: "detail-params" }),
    resultSection: null,
    result: slot("pre", { className: "code", id: "detail-result" }),
    errorSection: null,
    error: slot("pre", { className: "code code-error", id: "detail-error" }),
    actions: slot("div", { className: "detail-actions", id: "detail-actions" }),
    actionsKey: null,
    onAnswer,
    onOpen,
    childrenSection: null,
    children: slot("ul", { className: "children", id: "detail-children" }),
  };
  slots.bar.id = "detail-progress";
  slots.progressSection = section("Progress",
    h("div", { className: "progress-line" }, slots.bar, slots.percent), slots.message);
  slots.resultSection = section("Result", slots.result);
  slots.errorSection = section("Error", slots.error);
  slots.childrenSection = section("Children", slots.children);
  slots.childrenSection.hidden = true;
  $("#detail-body").replaceChildren(
    slots.actions,
    slots.progressSection,
    slots.errorSection,
    slots.resultSection,
    slots.childrenSection,
    section("Params", slots.params),
    section("Details", slots.facts),
  );
  return slots;
}

/** The task's children (ctx.run, map, start), in the order they were made, each with its
 * status and progress; a click opens one (and its own children). */
export function renderChildren(slots, children) {
  const list = [...children.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  slots.childrenSection.hidden = list.length === 0;
  const done = list.filter((child) => child.status === "completed").length;
  setText(slots.childrenSection.querySelector("h3"), `Children (${done} of ${list.length} completed)`);
  slots.children.replaceChildren(...list.map((child) => {
    const bar = progressBar(`Progress of child ${child.name} ${child.id}`);
    setProgress(bar, child.status === "completed" ? 100 : child.progress);
    return h("li", { className: "child", dataset: { taskId: child.id, status: child.status } },
      h("button", {
        type: "button", className: "btn btn-quiet child-open", text: child.name,
        "aria-label": `Open child ${child.name} ${child.id}`,
        onclick: () => slots.onOpen(child.id),
      }),
      h("span", { className: "badge", dataset: { status: child.status }, text: child.status }),
      bar);
  }));
}

/** Show `task` in the slots buildDetail made (only text and attributes change). */
export function renderDetail(slots, task) {
  setText($("#detail-title"), task.name);
  setText($("#detail-id"), task.id);
  const badge = $("#detail-status");
  badge.dataset.status = task.status;
  setText(badge, task.status);
  $("#task-detail").dataset.taskId = task.id;
  $("#task-detail").dataset.status = task.status;

  const showProgress = task.status === "running" || (task.progress !== null && task.progress !== undefined);
  slots.progressSection.hidden = !showProgress;
  setProgress(slots.bar, task.progress);
  setText(slots.percent, formatPercent(task.progress));
  setText(slots.message, task.message ?? "");

  setText(slots.params, json(task.params ?? {}));
  const hasResult = task.status === "completed" || (task.result !== null && task.result !== undefined);
  slots.resultSection.hidden = !hasResult;
  setText(slots.result, hasResult ? json(task.result) : "");
  slots.errorSection.hidden = !task.error;
  setText(slots.error, task.error ?? "");
  const errorTitle = slots.errorSection.querySelector("h3");
  setText(errorTitle, task.status === "pending" ? "Last error (will retry)" : "Error");

  const facts = [
    ["Attempts", `${task.attempts} of ${task.max_attempts}`],
    ["Priority", String(task.priority)],
    ["Created", fullTime(task.created_at)],
    ["Runs at", task.run_at && task.run_at !== task.created_at ? fullTime(task.run_at) : ""],
    ["Started", fullTime(task.started_at)],
    ["Finished", fullTime(task.finished_at)],
    ["Waited", task.started_at ? between(task.run_at ?? task.created_at, task.started_at) : ""],
    ["Ran for", task.finished_at ? between(task.started_at, task.finished_at) : ""],
    ["Schedule", task.schedule_id ?? ""],
    ["Cancel", task.cancel_requested ? "requested" : ""],
  ].filter(([, value]) => value);
  const rows = facts.flatMap(([term, value]) => [h("dt", { text: term }), h("dd", { text: value })]);
  if (task.parent_id) {
    rows.push(h("dt", { text: "Parent" }), h("dd", {},
      h("button", {
        type: "button", className: "btn btn-quiet parent-open", text: task.parent_id,
        "aria-label": `Open the parent task ${task.parent_id}`,
        onclick: () => slots.onOpen(task.parent_id),
      })));
  }
  slots.facts.replaceChildren(...rows);

  const key = actionsKey(task);
  if (slots.actionsKey !== key) {
    slots.actionsKey = key;
    slots.actions.replaceChildren(...actionButtons(task, slots.onAnswer));
  }
}
