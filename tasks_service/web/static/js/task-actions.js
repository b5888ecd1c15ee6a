// Cancel and Retry, the same buttons in a task's row and in its detail drawer. Where the
// answer goes is the caller's to say, so this module needs nothing from the list.

import { canWrite } from "./access.js";
import { api, describeError } from "./api.js";
import { h } from "./dom.js";
import { shortId } from "./format.js";
import { toast } from "./toast.js";

/** Which buttons `task` gets: its status, a cancel asked for, and what the token may do. */
export function actionsKey(task) {
  return `${task.status}:${task.cancel_requested}:${canWrite()}`;
}

/** The buttons that fit `task`'s status (none for a read-only token); answers go to onAnswer. */
export function actionButtons(task, onAnswer) {
  if (!canWrite()) return [];
  const label = `${task.name} ${shortId(task.id)}`;
  const buttons = [];
  if (task.status === "pending" || task.status === "running") {
    buttons.push(h("button", {
      type: "button", className: "btn btn-small btn-danger", dataset: { action: "cancel" },
      disabled: task.cancel_requested, "aria-label": `Cancel ${label}`, text: "Cancel",
      onclick: (event) => cancelTask(task.id, event.currentTarget, onAnswer),
    }));
  }
  if (task.status === "failed" || task.status === "cancelled") {
    buttons.push(h("button", {
      type: "button", className: "btn btn-small", dataset: { action: "retry" },
      "aria-label": `Retry ${label}`, text: "Retry",
      onclick: (event) => retryTask(task.id, event.currentTarget, onAnswer),
    }));
  }
  return buttons;
}

async function cancelTask(id, button, onAnswer) {
  if (button) button.disabled = true;
  try {
    const task = await api("POST", `/tasks/${encodeURIComponent(id)}/cancel`);
    onAnswer(task);
  } catch (error) {
    toast(`Cannot cancel: ${describeError(error)}`, "error");
    if (button) button.disabled = false;
  }
}

async function retryTask(id, button, onAnswer) {
  if (button) button.disabled = true;
  try {
    const task = await api("POST", `/tasks/${encodeURIComponent(id)}/retry`);
    onAnswer(task);
    toast(`Retrying as ${task.name} ${shortId(task.id)}`);
  } catch (error) {
    toast(`Cannot retry: ${describeError(error)}`, "error");
  } finally {
    if (button) button.disabled = false;
  }
}
